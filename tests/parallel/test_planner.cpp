// The planner on synthetic loads: a pure function, no MPI.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "parallel/incremental_plan.h"
#include "parallel/planner.h"
#include "parallel/planner_record.h"
#include "runtime/error.h"

namespace moerun::test {
namespace {

std::vector<double> zipf(int experts, double s, double total) {
  std::vector<double> w(static_cast<std::size_t>(experts));
  for (int e = 0; e < experts; ++e) w[static_cast<std::size_t>(e)] = 1.0 / std::pow(e + 1.0, s);
  const double sum = std::accumulate(w.begin(), w.end(), 0.0);
  for (double& x : w) x *= total / sum;
  return w;
}

CostModel cost() {
  CostModel c;
  c.seconds_per_copy = 1e-5;
  c.bytes_per_copy = 4 * 512 * 4;
  c.bandwidth = 5e9;
  c.migration_bandwidth = 5e9;
  c.expert_state_bytes = 3 * 2 * 512 * 2048 * 4;  // weights + two moments
  c.fixed_seconds = 0.1;
  return c;
}

double max_over_mean(const std::vector<double>& loads, const Placement& p) {
  const auto r = expected_rank_loads(loads, p);
  return *std::max_element(r.begin(), r.end()) / (std::accumulate(r.begin(), r.end(), 0.0) / double(r.size()));
}

}  // namespace

TEST(Planner, SkewedLoadIsBalancedWithinTenPercentWhenSlotsAllow) {
  for (int ep : {2, 4, 8}) {
    for (double s : {0.8, 1.2, 1.6}) {
      SCOPED_TRACE(::testing::Message() << "ep " << ep << " zipf " << s);
      const int experts = 8;
      PlannerInput in;
      in.loads = {zipf(experts, s, 16384), zipf(experts, s, 16384)};
      in.current = {Placement::contiguous(experts, ep), Placement::contiguous(experts, ep)};
      in.cost = cost();
      in.policy = BalancePolicy::Replicate;
      in.max_experts_per_rank = experts / ep + 2;  // two spare slots per rank
      in.interval = 100;
      const PlannerDecision d = plan_placement(in);
      ASSERT_TRUE(d.apply) << d.reason;
      EXPECT_GT(d.before.imbalance, 1.2);
      for (std::size_t l = 0; l < 2; ++l) {
        EXPECT_LE(max_over_mean(in.loads[l], d.placements[l]), 1.10) << d.placements[l].describe();
        EXPECT_LE(d.placements[l].max_slots_used(), in.max_experts_per_rank);
      }
      EXPECT_LT(d.after.step_seconds, d.before.step_seconds);
    }
  }
}

TEST(Planner, BalancedLoadGivesNoChange) {
  PlannerInput in;
  in.loads = {std::vector<double>(8, 1000.0)};
  in.current = {Placement::contiguous(8, 4)};
  in.cost = cost();
  for (BalancePolicy policy : {BalancePolicy::Migrate, BalancePolicy::Replicate, BalancePolicy::Auto}) {
    in.policy = policy;
    in.max_experts_per_rank = 4;
    const PlannerDecision d = plan_placement(in);
    EXPECT_FALSE(d.apply) << d.reason;
    EXPECT_TRUE(d.placements[0] == in.current[0]);
  }
}

TEST(Planner, GainSmallerThanMigrationCostGivesNoChange) {
  PlannerInput in;
  in.loads = {zipf(8, 1.2, 16384)};
  in.current = {Placement::contiguous(8, 2)};
  in.cost = cost();
  in.cost.expert_state_bytes = 1e12;  // moving an expert costs minutes
  in.policy = BalancePolicy::Auto;
  in.max_experts_per_rank = 8;
  in.interval = 10;
  const PlannerDecision d = plan_placement(in);
  EXPECT_FALSE(d.apply);
  EXPECT_NE(d.reason.find("does not pay"), std::string::npos) << d.reason;
  in.force = true;  // the same candidate is taken when forced
  EXPECT_TRUE(plan_placement(in).apply);
}

TEST(Planner, MigrateIsAPermutationThatMovesLittle) {
  const std::vector<double> loads = {900, 800, 10, 10, 10, 10, 10, 10};  // two hot experts on rank 0
  const Placement current = Placement::contiguous(8, 4);  // 0,1 | 2,3 | 4,5 | 6,7
  const Placement next = plan_migrate(loads, current);
  for (int r = 0; r < 4; ++r) EXPECT_EQ(next.slots_used(r), 2);
  for (int e = 0; e < 8; ++e) EXPECT_EQ(next.replicas(e).size(), 1u);
  EXPECT_NE(next.replicas(0)[0].rank, next.replicas(1)[0].rank);  // the hot pair is split
  EXPECT_LT(max_over_mean(loads, next), max_over_mean(loads, current));
  // Relabelling keeps most experts where they are: at most 2 of 8 move.
  int moved = 0;
  for (int e = 0; e < 8; ++e) moved += next.holds(current.replicas(e)[0].rank, e) ? 0 : 1;
  EXPECT_LE(moved, 2);
}

TEST(Planner, ReplicateCanPutOneExpertOnEveryRank) {
  const std::vector<double> loads = {10000, 10, 10, 10};
  const Placement next = plan_replicate(loads, Placement::contiguous(4, 4), 2);
  EXPECT_EQ(next.replicas(0).size(), 4u);  // the hot expert everywhere
  for (int r = 0; r < 4; ++r) EXPECT_LE(next.slots_used(r), 2);
  EXPECT_LT(max_over_mean(loads, next), 1.2);
}

TEST(Planner, PredictionCountsCrossingCopies) {
  // One expert per rank, each source sends (ep - 1) / ep of its copies away.
  const CostModel c = cost();
  const std::vector<std::vector<double>> loads = {{400, 400}};
  const Prediction p = predict(loads, {Placement::contiguous(2, 2)}, c);
  EXPECT_DOUBLE_EQ(p.crossing_copies, 200.0);  // per rank: half of its 400 copies
  EXPECT_NEAR(p.step_seconds, c.fixed_seconds + 400 * c.seconds_per_copy + 200 * c.bytes_per_copy / c.bandwidth, 1e-12);
  EXPECT_DOUBLE_EQ(p.imbalance, 1.0);
}

TEST(Planner, ExpectedLoadsAndExchangeFollowTheDispatchRuleSourceBySource) {
  // Replicas with unequal shares and experts on one rank; the reference routes each source's
  // copies with Placement::split, the dispatcher's rule, one source at a time.
  const int p = 4;
  const Placement pl(p, {{{0, 1}, {2, 3}}, {{1, 1}}, {{1, 2}, {2, 1}, {3, 1}}, {{3, 1}}, {{0, 1}}, {{2, 1}}, {{3, 1}}, {{1, 1}}});
  const std::vector<double> loads = {9600, 480, 4800, 960, 1920, 96, 192, 384};  // each divisible by p x shares
  std::vector<double> at(p, 0.0), sent(p, 0.0), received(p, 0.0);
  for (int e = 0; e < pl.experts(); ++e)
    for (int s = 0; s < p; ++s) {
      const auto rows = static_cast<std::int64_t>(loads[static_cast<std::size_t>(e)] / p);
      const std::vector<std::int64_t> split = pl.split(e, s, rows);
      for (int r = 0; r < p; ++r) {
        at[static_cast<std::size_t>(r)] += double(split[static_cast<std::size_t>(r)]);
        if (r == s) continue;
        sent[static_cast<std::size_t>(s)] += double(split[static_cast<std::size_t>(r)]);
        received[static_cast<std::size_t>(r)] += double(split[static_cast<std::size_t>(r)]);
      }
    }
  const std::vector<double> expected = expected_rank_loads(loads, pl);
  for (int r = 0; r < p; ++r) EXPECT_NEAR(expected[static_cast<std::size_t>(r)], at[static_cast<std::size_t>(r)], 1e-9) << "rank " << r;
  CostModel c = cost();
  c.seconds_per_copy = 0.0;  // leaves the exchange: the busiest rank's copies sent or received
  const double busiest = std::max(*std::max_element(sent.begin(), sent.end()), *std::max_element(received.begin(), received.end()));
  const Prediction pr = predict({loads}, {pl}, c);
  EXPECT_NEAR(pr.step_seconds - c.fixed_seconds, busiest * c.bytes_per_copy / c.bandwidth, 1e-12);
  EXPECT_EQ(pl.slots_used_per_rank(), (std::vector<int>{2, 3, 3, 3}));
}

TEST(Planner, PredictionChargesReplicasTheirGradientReduction) {
  CostModel c = cost();
  c.replica_grad_bytes = 3e6;
  c.reduce_bandwidth = 1e9;
  // Expert 0 on ranks 0-2, expert 1 on ranks 1 and 3: rank 1 reduces both, 2 (3 - 1) / 3 and
  // 2 (2 - 1) / 2 of a gradient on the wire.
  const Placement pl(4, {{{0, 1}, {1, 1}, {2, 1}}, {{1, 1}, {3, 1}}, {{2, 1}}, {{3, 1}}});
  const std::vector<std::vector<double>> loads = {{400, 400, 400, 400}};
  const std::vector<double> wire = replica_reduce_wire_bytes(pl, c.replica_grad_bytes);
  EXPECT_DOUBLE_EQ(wire[0], 4e6);
  EXPECT_DOUBLE_EQ(wire[1], 7e6);
  EXPECT_DOUBLE_EQ(wire[3], 3e6);
  const Prediction charged = predict(loads, {pl}, c);
  EXPECT_NEAR(charged.replica_reduce_seconds, 7e-3, 1e-15);
  c.replica_grad_bytes = 0.0;
  EXPECT_NEAR(charged.step_seconds - predict(loads, {pl}, c).step_seconds, 7e-3, 1e-12);
}

// Two experts on two ranks, one hot: only replicas lower the busiest rank (3000 -> 2500 copies
// with the hot expert on both ranks, -> 2000 with both experts on both, 5 ms a step each here).
// They are made when summing a replica's gradient costs less than that, and not when it costs
// more.
TEST(Planner, AReplicaWhoseGradientReductionCostsMoreThanItSavesIsNotMade) {
  PlannerInput in;
  in.loads = {{3000, 1000}};
  in.current = {Placement::contiguous(2, 2)};
  in.cost = cost();
  in.cost.fixed_seconds = 0.0;
  in.cost.replica_grad_bytes = 1e6;
  in.policy = BalancePolicy::Auto;
  in.max_experts_per_rank = 2;
  in.interval = 100;
  in.cost.reduce_bandwidth = 1e9;  // 1 ms a step
  const PlannerDecision cheap = plan_placement(in);
  ASSERT_TRUE(cheap.apply) << cheap.reason;
  EXPECT_EQ(cheap.placements[0].replicas(0).size(), 2u);
  EXPECT_EQ(cheap.placements[0].replicas(1).size(), 2u);
  EXPECT_NEAR(cheap.after.replica_reduce_seconds, 2e-3, 1e-12);
  in.cost.reduce_bandwidth = 1e8;  // 10 ms a step
  const PlannerDecision costly = plan_placement(in);
  EXPECT_FALSE(costly.apply) << costly.reason;
  in.force = true;  // balance.force still gets a change, though every one costs more than it saves
  const PlannerDecision forced = plan_placement(in);
  EXPECT_TRUE(forced.apply) << forced.reason;
  EXPECT_FALSE(forced.placements[0] == in.current[0]);
}

// Each rank's experts finish when its copies and its experts' fixed work are done: rank 0 has
// more copies, rank 1 more experts. Which one sets the step depends on what a held expert costs.
TEST(Planner, PredictionChargesEachRankTheExpertsItHolds) {
  CostModel c = cost();
  c.bytes_per_copy = 0.0;  // the experts alone
  c.fixed_seconds = 0.0;
  const Placement pl(2, {{{0, 1}}, {{1, 1}}, {{1, 1}}, {{1, 1}}});  // rank 0: expert 0; rank 1: experts 1-3
  const std::vector<std::vector<double>> loads = {{3000, 300, 300, 300}};  // rank 0 3000 copies, rank 1 900
  EXPECT_NEAR(predict(loads, {pl}, c).step_seconds, 3000 * c.seconds_per_copy, 1e-12);
  c.seconds_per_held_expert = 1e-3;  // rank 0: 30 + 1 ms, rank 1: 9 + 3 ms
  EXPECT_NEAR(predict(loads, {pl}, c).step_seconds, 3000 * c.seconds_per_copy + 1e-3, 1e-12);
  c.seconds_per_held_expert = 20e-3;  // rank 0: 30 + 20 ms, rank 1: 9 + 60 ms
  EXPECT_NEAR(predict(loads, {pl}, c).step_seconds, 900 * c.seconds_per_copy + 60e-3, 1e-12);
}

// The loads of AReplicaWhoseGradientReductionCostsMoreThanItSavesIsNotMade, gradients free:
// a replica saves 5 ms a step of expert time (and some exchange). It is made when holding one
// more expert costs a rank less than that, and not when it costs more.
TEST(Planner, AReplicaWhoseHeldExpertCostsMoreThanItSavesIsNotMade) {
  PlannerInput in;
  in.loads = {{3000, 1000}};
  in.current = {Placement::contiguous(2, 2)};
  in.cost = cost();
  in.cost.fixed_seconds = 0.0;
  in.policy = BalancePolicy::Auto;
  in.max_experts_per_rank = 2;
  in.interval = 100;
  in.cost.seconds_per_held_expert = 1e-3;
  const PlannerDecision cheap = plan_placement(in);
  ASSERT_TRUE(cheap.apply) << cheap.reason;
  EXPECT_EQ(cheap.placements[0].replicas(0).size(), 2u);
  in.cost.seconds_per_held_expert = 20e-3;
  const PlannerDecision costly = plan_placement(in);
  EXPECT_FALSE(costly.apply) << costly.reason;
}

TEST(Planner, GainBelowTheMinimumFractionGivesNoChange) {
  PlannerInput in;
  in.loads = {{1200, 1000, 900, 900}};  // ranks 2200 vs 1800 copies: 10% over the mean
  in.current = {Placement::contiguous(4, 2)};
  in.cost = cost();
  in.cost.fixed_seconds = 10.0;  // the experts are a small part of the step
  in.policy = BalancePolicy::Auto;
  in.max_experts_per_rank = 4;
  in.threshold = 1.0;
  in.min_gain = 0.05;
  const PlannerDecision d = plan_placement(in);
  EXPECT_FALSE(d.apply);
  EXPECT_NE(d.reason.find("min_gain"), std::string::npos) << d.reason;
}

}  // namespace moerun::test

namespace moerun::test {

// The average of these steps is skewed (rank 0 holds the two experts that were hot once each),
// and swapping experts 1 and 2 balances the average; but no single step is helped by it (two
// get worse, three were balanced). Judged on the steps, the planner keeps the placement; judged
// on the average alone, it would move.
TEST(Planner, ImbalanceThatDoesNotPersistGivesNoChange) {
  PlannerInput in;
  in.recent_loads = {{{1200, 100, 300, 300}}, {{100, 1200, 300, 300}}, {{300, 300, 300, 300}},
                     {{300, 300, 300, 300}}, {{300, 300, 300, 300}}};
  in.loads = {{440, 440, 300, 300}};
  in.current = {Placement::contiguous(4, 2)};
  in.cost = cost();
  in.cost.fixed_seconds = 0.0;  // the experts are the step: any real gain clears min_gain
  in.policy = BalancePolicy::Auto;
  in.max_experts_per_rank = 3;
  in.interval = 100;
  const PlannerDecision judged_on_steps = plan_placement(in);
  EXPECT_FALSE(judged_on_steps.apply) << judged_on_steps.reason;
  in.recent_loads.clear();
  const PlannerDecision judged_on_average = plan_placement(in);
  EXPECT_TRUE(judged_on_average.apply) << judged_on_average.reason;
}

// A skew that holds in every step (Zipf, with noise) is acted on when judged step by step.
TEST(Planner, PersistentSkewIsBalancedWhenJudgedOnTheSteps) {
  PlannerInput in;
  in.loads = {zipf(8, 1.2, 16384)};
  for (int step = 0; step < 6; ++step) {
    std::vector<double> noisy = in.loads[0];
    for (std::size_t e = 0; e < noisy.size(); ++e) noisy[e] *= 1.0 + 0.1 * std::sin(double(step * 8 + e));
    in.recent_loads.push_back({noisy});
  }
  in.current = {Placement::contiguous(8, 2)};
  in.cost = cost();
  in.policy = BalancePolicy::Auto;
  in.max_experts_per_rank = 5;
  in.interval = 100;
  const PlannerDecision d = plan_placement(in);
  ASSERT_TRUE(d.apply) << d.reason;
  EXPECT_LE(max_over_mean(in.loads[0], d.placements[0]), 1.15) << d.placements[0].describe();
}

namespace {
// Five steps over 8 experts with a little noise: expert `hot` gets 4x the others' load (8: no
// expert is hot; negative: Zipf 1.2, hottest first).
std::vector<std::vector<std::vector<double>>> noisy_steps(int hot, int seed) {
  const std::vector<double> z = zipf(8, 1.2, 16384);
  std::vector<std::vector<std::vector<double>>> steps;
  for (int step = 0; step < 5; ++step) {
    std::vector<double> loads(8);
    for (std::size_t e = 0; e < 8; ++e) {
      const double base = hot < 0 ? z[e] : (static_cast<int>(e) == hot ? 4000.0 : 1000.0);
      loads[e] = base * (1.0 + 0.05 * std::sin(double(seed * 40 + step * 8) + double(e)));
    }
    steps.push_back({loads});
  }
  return steps;
}

PlannerInput skewed_input(std::vector<std::vector<std::vector<double>>> earlier,
                          std::vector<std::vector<std::vector<double>>> recent) {
  PlannerInput in;
  in.loads = recent.back();
  in.recent_loads = std::move(recent);
  in.earlier_loads = std::move(earlier);
  in.current = {Placement::contiguous(8, 2)};
  in.cost = cost();
  in.policy = BalancePolicy::Auto;
  in.max_experts_per_rank = 5;
  in.interval = 100;
  return in;
}
}  // namespace

// The router moved its hot expert from one of rank 0's experts (0) to one of rank 1's (4)
// between the earlier steps and the recent ones. Fitted to the recent steps alone a change
// pays; but a placement fitted to the earlier steps relieves rank 0 and barely helps the recent
// steps, so little of a fitted saving is expected to last: the planner does not chase the hot
// expert, and says why.
TEST(Planner, AHotExpertThatMovesOnIsNotChased) {
  PlannerInput in = skewed_input(noisy_steps(0, 1), noisy_steps(4, 2));
  in.interval = 10;
  const PlannerDecision d = plan_placement(in);
  EXPECT_FALSE(d.apply) << d.reason;
  EXPECT_LT(d.persistence, 0.1);
  EXPECT_NE(d.reason.find("a placement fitted to earlier steps kept"), std::string::npos) << d.reason;
  // An imbalance that is new since the earlier steps (they were balanced) has not persisted yet.
  in.earlier_loads = noisy_steps(8, 1);
  const PlannerDecision fresh = plan_placement(in);
  EXPECT_FALSE(fresh.apply) << fresh.reason;
  EXPECT_LT(fresh.persistence, 0.1);
  in.earlier_loads.clear();  // no earlier steps: no evidence of drift, the saving is expected to last
  const PlannerDecision unchecked = plan_placement(in);
  EXPECT_TRUE(unchecked.apply) << unchecked.reason;
  EXPECT_EQ(unchecked.persistence, 1.0);
}

// The same Zipf skew in the earlier and the recent steps (different noise): most of the
// fitted saving persists, the change is made, and its expected gain is discounted by exactly
// the share that persisted.
TEST(Planner, ASkewThatPersistsKeepsMostOfItsExpectedGain) {
  PlannerInput in = skewed_input(noisy_steps(-1, 1), noisy_steps(-1, 2));
  in.cost.realized_gain = 0.9;
  const PlannerDecision d = plan_placement(in);
  ASSERT_TRUE(d.apply) << d.reason;
  EXPECT_GT(d.persistence, 0.8);
  EXPECT_LE(d.persistence, 1.0);
  EXPECT_NEAR(d.gain_seconds, (d.before.step_seconds - d.after.step_seconds) * 0.9 * d.persistence * in.interval, 1e-12);
  EXPECT_LE(max_over_mean(in.loads[0], d.placements[0]), 1.15) << d.placements[0].describe();
}


// The placement was fitted when experts 0 and 1 were hot (it swapped 1 with 4, parting them),
// and the router has since moved its heat from 1 to 4, which that placement puts beside 0 on
// rank 0: 8000 copies against 4000. The static layout (what policy none runs) balances the
// recent steps. A re-fit is discounted as chasing (the placement fitted to the earlier steps
// saves nothing on the recent ones), the static layout is not (fitted to no loads): the planner
// goes home, and says so.
TEST(Planner, APlacementOvertakenByTheLoadsGoesBackToTheStaticLayout) {
  auto steps = [](int hot_a, int hot_b, int seed) {
    std::vector<std::vector<std::vector<double>>> out;
    for (int step = 0; step < 5; ++step) {
      std::vector<double> loads(8);
      for (int e = 0; e < 8; ++e)
        loads[static_cast<std::size_t>(e)] = (e == hot_a || e == hot_b ? 3000.0 : 1000.0) * (1.0 + 0.05 * std::sin(double(seed * 40 + step * 8 + e)));
      out.push_back({loads});
    }
    return out;
  };
  PlannerInput in = skewed_input(steps(0, 1, 1), steps(0, 4, 2));
  in.interval = 10;
  const Placement fitted_to_0_and_1(2, {{{0, 1}}, {{1, 1}}, {{0, 1}}, {{0, 1}}, {{0, 1}}, {{1, 1}}, {{1, 1}}, {{1, 1}}});
  in.current = {fitted_to_0_and_1};
  const PlannerDecision d = plan_placement(in);
  ASSERT_TRUE(d.apply) << d.reason;
  EXPECT_TRUE(d.home);
  EXPECT_FALSE(d.reverted);
  EXPECT_EQ(d.placements[0], Placement::contiguous(8, 2)) << d.placements[0].describe();
  EXPECT_EQ(d.chosen, BalancePolicy::None);
  EXPECT_EQ(d.persistence, 1.0);
  EXPECT_NEAR(d.gain_seconds, (d.before.step_seconds - d.after.step_seconds) * in.cost.realized_gain * in.interval, 1e-12);
  EXPECT_NE(d.reason.find("static layout"), std::string::npos) << d.reason;
  // While experts 0 and 1 stay hot, the held placement beats the static layout: it stays.
  in.earlier_loads = steps(0, 1, 3);
  in.recent_loads = steps(0, 1, 2);
  in.loads = in.recent_loads.back();
  const PlannerDecision kept = plan_placement(in);
  EXPECT_FALSE(kept.home) << kept.reason;
  EXPECT_FALSE(kept.apply) << kept.reason;
}

// Replicas bought for an imbalance that has gone (experts 0 and 4 on both ranks): the loads are even (below balance.threshold,
// where no fitted candidate is tried), yet each replica's upkeep (its holder's fixed work and
// the sum of its gradient over replicas) is still paid every step. The static layout, with no
// replicas, is the way back.
TEST(Planner, ReplicasKeptAfterTheirImbalanceWentAreDropped) {
  PlannerInput in = skewed_input({}, noisy_steps(8, 1));
  in.loads = in.recent_loads.back();
  in.cost.seconds_per_held_expert = 20e-3;
  in.cost.replica_grad_bytes = 25e6;
  in.cost.fixed_seconds = 0.0;
  std::vector<std::vector<Replica>> replicas;
  for (int e = 0; e < 8; ++e) replicas.push_back(e % 4 == 0 ? std::vector<Replica>{{0, 1}, {1, 1}} : std::vector<Replica>{{e / 4, 1}});
  in.current = {Placement(2, replicas)};
  const PlannerDecision d = plan_placement(in);
  ASSERT_LE(d.before.imbalance, in.threshold);
  ASSERT_TRUE(d.apply) << d.reason;
  EXPECT_TRUE(d.home);
  EXPECT_EQ(d.placements[0], Placement::contiguous(8, 2));
  // Without upkeep the replicas cost nothing: nothing to gain, and the threshold says why.
  in.cost.seconds_per_held_expert = 0.0;
  in.cost.replica_grad_bytes = 0.0;
  const PlannerDecision free = plan_placement(in);
  EXPECT_FALSE(free.apply);
  EXPECT_NE(free.reason.find("threshold"), std::string::npos) << free.reason;
}

// balance.min_gain applies to the saving expected, not the one predicted: a change predicted
// to save a fraction f of the step, of which half is expected to be realized, is refused at
// min_gain 0.75 f (it passed when the gate looked at the raw prediction) and made at 0.25 f.
TEST(Planner, MinGainIsJudgedOnTheExpectedSaving) {
  PlannerInput in = skewed_input(noisy_steps(-1, 1), noisy_steps(-1, 2));
  in.cost.realized_gain = 0.5;
  in.min_gain = 0.0;
  const PlannerDecision d = plan_placement(in);
  ASSERT_TRUE(d.apply) << d.reason;
  const double predicted = (d.before.step_seconds - d.after.step_seconds) / d.before.step_seconds;
  ASSERT_GT(0.5 * d.persistence, 0.25);
  in.min_gain = 0.75 * predicted;
  const PlannerDecision refused = plan_placement(in);
  EXPECT_FALSE(refused.apply) << refused.reason;
  EXPECT_NE(refused.reason.find("expected gain"), std::string::npos) << refused.reason;
  in.min_gain = 0.25 * predicted;
  EXPECT_TRUE(plan_placement(in).apply);
}

}  // namespace moerun::test

namespace moerun::test {

TEST(Planner, IncrementalChangesLowerTheBusiestRankAtEverySnapshotAndMoveFewStates) {
  const int experts = 64, ep = 16, slots = experts / ep + 1;
  std::vector<double> loads = zipf(experts, 1.2, 1 << 16);
  const Placement now = Placement::contiguous(experts, ep);
  const auto steps = incremental_placements(loads, now, slots);
  ASSERT_FALSE(steps.empty());
  auto busiest = [&](const Placement& p) {
    const auto rank = expected_rank_loads(loads, p);
    return *std::max_element(rank.begin(), rank.end());
  };
  double previous = busiest(now);
  int previous_moved = 0;
  for (const IncrementalStep& s : steps) {
    EXPECT_LT(busiest(s.placement), previous) << s.placement.describe();
    EXPECT_LE(s.placement.max_slots_used(), slots);
    EXPECT_GT(s.states_moved, 0);
    EXPECT_EQ(s.states_moved * 1.0, migration_bytes({now}, {s.placement}, CostModel{.expert_state_bytes = 1.0}));
    for (int e = 0; e < experts; ++e) EXPECT_FALSE(s.placement.replicas(e).empty());
    previous = busiest(s.placement);
    previous_moved = std::max(previous_moved, s.states_moved);
  }
  // The walk reaches what re-packing reaches, to 10%, moving far fewer states. The hottest
  // experts start together on rank 0: the walk spreads them (swaps) as well as replicating.
  const Placement repacked = plan_replicate(loads, now, slots);
  EXPECT_LE(busiest(steps.back().placement), 1.1 * busiest(repacked));
  EXPECT_LT(previous_moved, migration_bytes({now}, {repacked}, CostModel{.expert_state_bytes = 1.0}) / 2);
  // A placement that is already balanced needs no change.
  EXPECT_TRUE(incremental_placements(std::vector<double>(experts, 1.0), now, slots).empty());
}

TEST(Planner, AShortIntervalTakesTheCheapCandidateWhenRepackingDoesNotPay) {
  const int experts = 256, ep = 64;
  PlannerInput in;
  in.loads = {zipf(experts, 1.2, 1 << 20)};
  in.current = {Placement::contiguous(experts, ep)};
  in.cost = cost();
  in.cost.fixed_seconds = 0.0;
  in.cost.expert_state_bytes = 1e9;  // expensive state: re-packing every expert cannot pay in 5 steps
  in.policy = BalancePolicy::Auto;
  in.max_experts_per_rank = experts / ep + 1;
  in.interval = 5;
  const PlannerDecision d = plan_placement(in);
  ASSERT_TRUE(d.apply) << d.reason;
  EXPECT_EQ(d.chosen, BalancePolicy::Replicate);
  EXPECT_LE(d.migrate_bytes, ep * in.cost.expert_state_bytes);
  EXPECT_LT(d.migrate_bytes, migration_bytes(in.current, {plan_replicate(in.loads[0], in.current[0], in.max_experts_per_rank)}, in.cost) / 4);
}

// A change the model predicted to save that measured slower passes, beyond the noise the
// planner allows itself (min_gain), is undone at the next decision, whatever the model still
// predicts, unless moving back costs more than the loss until the decision after.
TEST(Planner, AChangeThatMeasuredSlowerIsUndone) {
  PlannerInput in;
  in.loads = {zipf(8, 1.2, 16384)};
  in.previous = {Placement::contiguous(8, 2)};
  in.cost = cost();
  in.policy = BalancePolicy::Migrate;
  in.max_experts_per_rank = 8;
  in.interval = 10;
  in.min_gain = 0.05;
  in.current = {plan_migrate(in.loads[0], in.previous[0])};  // a move: going back moves state too
  ASSERT_FALSE(in.current == in.previous);
  const PlannerDecision modelled = plan_placement(in);
  EXPECT_FALSE(modelled.apply) << "the model still prefers its change: " << modelled.reason;

  in.last_change_slowdown = 0.08;
  const PlannerDecision back = plan_placement(in);
  ASSERT_TRUE(back.apply) << back.reason;
  EXPECT_TRUE(back.reverted);
  EXPECT_EQ(back.placements, in.previous);
  EXPECT_EQ(back.migrate_bytes, migration_bytes(in.current, in.previous, in.cost));
  EXPECT_GT(back.after.step_seconds, back.before.step_seconds) << "against the model's prediction";
  EXPECT_NE(back.reason.find("8.0% slower"), std::string::npos) << back.reason;

  in.last_change_slowdown = 0.04;  // within the noise: the model decides
  EXPECT_FALSE(plan_placement(in).reverted);
  in.last_change_slowdown = 0.08;
  in.cost.migration_bandwidth = 1.0;  // moving back would take longer than the interval loses
  EXPECT_FALSE(plan_placement(in).reverted);
  in.cost.migration_bandwidth = cost().migration_bandwidth;
  in.force = true;  // forced changes are the benchmark's, not the measurement's
  EXPECT_FALSE(plan_placement(in).reverted);
  in.force = false;
  in.previous.clear();  // no way back: already reverted
  EXPECT_FALSE(plan_placement(in).reverted);
}

// The logged planner input (log.planner_inputs) is the whole input: read back, it is the same
// JSON and the planner decides the same; a missing field is named.
TEST(PlannerRecord, RoundTripsExactlyAndGivesTheSameDecision) {
  PlannerInput in;
  in.loads = {zipf(8, 1.2, 1000.0 / 3.0), zipf(8, 0.8, 1000.0)};
  in.recent_loads = {in.loads, {zipf(8, 1.1, 999.0), zipf(8, 0.7, 1001.0)}};
  in.earlier_loads = {{zipf(8, 1.0, 998.0), zipf(8, 0.9, 1002.0)}, in.loads};
  in.current = {Placement::contiguous(8, 4), Placement(4, {{{0, 1}}, {{0, 1}}, {{1, 1}, {3, 2}}, {{1, 1}}, {{2, 1}},
                                                           {{2, 1}}, {{3, 1}}, {{3, 1}}})};
  in.cost = cost();
  in.cost.seconds_per_held_expert = 3e-3;
  in.policy = BalancePolicy::Eplb;
  in.max_experts_per_rank = 4;
  in.node_of_rank = {0, 0, 1, 1};
  in.threshold = 1.05;
  in.interval = 7;
  in.min_gain = 0.01;
  in.previous = {in.current[1], in.current[0]};
  in.last_change_slowdown = 0.003;  // within min_gain: recorded, not acted on
  const nlohmann::json logged = nlohmann::json::parse(planner_input_to_json(in).dump());  // through text, as in events.jsonl
  const PlannerInput back = planner_input_from_json(logged);
  EXPECT_EQ(planner_input_to_json(back), logged);
  const PlannerDecision a = plan_placement(in), b = plan_placement(back);
  EXPECT_EQ(a.apply, b.apply);
  EXPECT_EQ(a.chosen, b.chosen);
  EXPECT_EQ(a.placements, b.placements);
  EXPECT_EQ(a.before.step_seconds, b.before.step_seconds);
  EXPECT_EQ(a.after.step_seconds, b.after.step_seconds);
  EXPECT_EQ(a.persistence, b.persistence);
  EXPECT_FALSE(b.reverted);
  PlannerInput slower = back;  // beyond min_gain: both go back
  slower.last_change_slowdown = in.last_change_slowdown = 0.2;
  EXPECT_TRUE(plan_placement(in).reverted);
  EXPECT_EQ(plan_placement(planner_input_from_json(planner_input_to_json(slower))).placements, in.previous);
  nlohmann::json older = logged;  // written before the persistence check: none is made
  older.erase("earlier_loads");
  EXPECT_TRUE(planner_input_from_json(older).earlier_loads.empty());
  older.erase("previous");  // written before the planner could go back: it never does
  older.erase("last_change_slowdown");
  EXPECT_TRUE(planner_input_from_json(older).previous.empty());
  nlohmann::json broken = logged;
  broken.erase("recent_loads");
  try {
    planner_input_from_json(broken);
    FAIL() << "a missing field was accepted";
  } catch (const RuntimeError& e) {
    EXPECT_NE(std::string(e.what()).find("'recent_loads'"), std::string::npos) << e.what();
  }
}

}  // namespace moerun::test
