// The cost model's measured inputs (CostObserver): how much of a placement change's predicted
// saving was achieved, and how the planner then discounts what it expects.
#include <gtest/gtest.h>

#include "parallel/planner.h"
#include "train/planner_input.h"

namespace moerun::test {
namespace {

// A step of `ms`, all of it in the passes unless `update_ms` says how much came after them.
StepResult step_of(double ms, double update_ms = 0.0) {
  StepResult s;
  s.step_ms = ms;
  s.passes_ms = ms - update_ms;
  return s;
}

// A decision that changed the placement, as the planner judged it: the step from `before` to
// `after` seconds.
PlannerDecision change(double before, double after) {
  PlannerDecision d;
  d.apply = true;
  d.before.step_seconds = before;
  d.after.step_seconds = after;
  return d;
}

PlannerDecision way_back() {
  PlannerDecision d = change(0.1, 0.2);
  d.reverted = true;
  return d;
}

}  // namespace

TEST(CostObserver, AChangeIsMeasuredAgainstItsPredictedSaving) {
  CostObserver cost(1);  // window 1: the step-time average is the last step
  EXPECT_EQ(cost.measurements().realized_gain, 1.0);
  cost.observe(step_of(200));
  cost.applied(change(0.200, 0.100), {}, 3);  // predicted: 100 ms saved per step
  cost.observe(step_of(190));
  cost.observe(step_of(160));
  EXPECT_FALSE(cost.take_outcome()) << "two of the three steps are in";
  cost.observe(step_of(150));
  const auto o = cost.take_outcome();
  ASSERT_TRUE(o);
  EXPECT_DOUBLE_EQ(o->measured_before, 0.200);
  EXPECT_DOUBLE_EQ(o->measured_after, 0.160);  // the median of 190, 160, 150
  EXPECT_NEAR(o->realized, 0.4, 1e-12);        // 40 of the predicted 100 ms
  // The model's claim (1) counts as one measurement beside it: (1 + 0.4) / 2.
  EXPECT_NEAR(cost.measurements().realized_gain, 0.7, 1e-12);
  EXPECT_FALSE(cost.take_outcome()) << "an outcome is reported once";

  // A change that made the step slower counts as 0, more than predicted as 1: predictions are
  // never scaled up.
  cost.applied(change(0.150, 0.100), {}, 1);
  cost.observe(step_of(170));
  ASSERT_TRUE(cost.take_outcome());
  EXPECT_NEAR(cost.measurements().realized_gain, (1 + 0.4 + 0) / 3, 1e-12);
  cost.applied(change(0.170, 0.160), {}, 1);
  cost.observe(step_of(100));
  ASSERT_TRUE(cost.take_outcome());
  EXPECT_NEAR(cost.measurements().realized_gain, (1 + 0.4 + 0 + 1) / 4, 1e-12);
  // A run of changes that achieve nothing drives the share down.
  for (int i = 0; i < 6; ++i) {
    cost.applied(change(0.100, 0.050), {}, 1);
    cost.observe(step_of(100));
    ASSERT_TRUE(cost.take_outcome());
  }
  EXPECT_NEAR(cost.measurements().realized_gain, 2.4 / 10, 1e-12);
}

// The update after the passes runs as long whatever the placement; on a shared host its
// memory-bound phases slowed one rank 3x in half of a run's steps (docs/adaptive-ep.md). A
// change is measured on the passes, so that noise does not count as a failed change.
TEST(CostObserver, AChangeIsMeasuredOnThePassesNotOnTheUpdateAfterThem) {
  CostObserver cost(1);
  cost.observe(step_of(300, 100));  // passes 200 ms
  cost.applied(change(0.300, 0.200), {}, 3);  // predicted: 100 ms saved per step
  cost.observe(step_of(450, 300));  // passes 150; the update slowed threefold
  cost.observe(step_of(260, 100));  // passes 160
  cost.observe(step_of(480, 310));  // passes 170
  const auto o = cost.take_outcome();
  ASSERT_TRUE(o);
  EXPECT_DOUBLE_EQ(o->measured_before, 0.300);
  EXPECT_DOUBLE_EQ(o->measured_after, 0.450) << "the step time is still reported (the prediction's error)";
  EXPECT_DOUBLE_EQ(o->passes_before, 0.200);
  EXPECT_DOUBLE_EQ(o->passes_after, 0.160);
  EXPECT_NEAR(o->realized, 0.4, 1e-12) << "40 of the predicted 100 ms, where the step times say the step got slower";
}

// A change predicted to save whose passes measured slower reports by how much (the planner
// goes back beyond min_gain), and keeps the placements it replaced as the way back.
TEST(CostObserver, AChangeThatMeasuredSlowerOffersTheWayBack) {
  const std::vector<Placement> before = {Placement::contiguous(4, 2)};
  CostObserver cost(1);
  cost.observe(step_of(200));
  EXPECT_TRUE(cost.before_last_change().empty());
  cost.applied(change(0.200, 0.100), before, 3);
  EXPECT_EQ(cost.before_last_change(), before);
  cost.observe(step_of(230));
  cost.observe(step_of(250));
  EXPECT_EQ(cost.measurements().last_change_slowdown, 0.0) << "not measured yet";
  cost.observe(step_of(220));
  ASSERT_TRUE(cost.take_outcome());
  EXPECT_NEAR(cost.measurements().last_change_slowdown, 0.15, 1e-12);  // median 230 against 200
  EXPECT_NEAR(cost.measurements().realized_gain, 0.5, 1e-12);
  cost.applied(way_back(), {}, 1);
  EXPECT_TRUE(cost.before_last_change().empty()) << "no way back from a way back";
  EXPECT_EQ(cost.measurements().last_change_slowdown, 0.0);

  // A faster outcome reports no slowdown; nor does a change the model did not expect to save.
  cost.applied(change(0.200, 0.100), before, 1);
  cost.observe(step_of(180));
  ASSERT_TRUE(cost.take_outcome());
  EXPECT_EQ(cost.measurements().last_change_slowdown, 0.0);
  cost.applied(change(0.200, 0.200), before, 1);
  cost.observe(step_of(300));
  ASSERT_TRUE(cost.take_outcome());
  EXPECT_EQ(cost.measurements().last_change_slowdown, 0.0);

  // A change is measured over min(5, interval) steps.
  cost.applied(change(0.300, 0.200), before, 20);
  for (int i = 0; i < 4; ++i) cost.observe(step_of(400));
  EXPECT_FALSE(cost.take_outcome()) << "four of five steps";
  cost.observe(step_of(400));
  ASSERT_TRUE(cost.take_outcome());
  EXPECT_NEAR(cost.measurements().last_change_slowdown, 1.0 / 3.0, 1e-12);  // 400 against 300
}

TEST(CostObserver, ThePlannerExpectsOnlyTheRealizedShareOfItsPredictedGain) {
  // Two experts on two ranks, both on rank 0: moving one halves the busiest rank.
  PlannerInput in;
  in.loads = {{1000.0, 1000.0}};
  in.current = {Placement(2, {{{0, 1}}, {{0, 1}}})};
  in.cost.seconds_per_copy = 1e-4;  // 0.2 s of experts on rank 0; a move saves 0.1 s per step
  in.cost.expert_state_bytes = 1e8;
  in.cost.migration_bandwidth = 1e8;  // a move costs 1 s
  in.policy = BalancePolicy::Migrate;
  in.max_experts_per_rank = 2;
  in.interval = 20;  // predicted: 2 s over the interval
  const PlannerDecision trusted = plan_placement(in);
  ASSERT_TRUE(trusted.apply) << trusted.reason;
  EXPECT_NEAR(trusted.gain_seconds, 2.0, 1e-9);
  in.cost.realized_gain = 0.4;  // past changes achieved 40%: 0.8 s expected, less than the move
  const PlannerDecision discounted = plan_placement(in);
  EXPECT_FALSE(discounted.apply);
  EXPECT_NE(discounted.reason.find("40% past changes realized"), std::string::npos) << discounted.reason;
}

// The planner gets the last balance.window steps one by one, and as many ending half an
// interval earlier (its persistence check), as far back as the monitor's history reaches.
TEST(PlannerInput, EarlierStepsEndHalfAnIntervalBeforeTheRecentOnes) {
  Config config;
  config.balance.window = 5;
  config.balance.interval = 10;
  LoadMonitor monitor(1, 2, 5, load_history_steps(config));
  auto first_of = [](const std::vector<std::vector<std::vector<double>>>& steps) {
    std::vector<double> out;
    for (const auto& s : steps) out.push_back(s[0][0]);
    return out;
  };
  auto input = [&] {
    return make_planner_input(config, monitor, {Placement::contiguous(2, 2)}, CostMeasurements{.seconds_per_copy = 1e-6}, {}, {});
  };
  for (int step = 0; step < 5; ++step) monitor.record({{double(step), 1.0}});
  EXPECT_TRUE(input().earlier_loads.empty()) << "no step before the recent ones";
  for (int step = 5; step < 7; ++step) monitor.record({{double(step), 1.0}});
  EXPECT_EQ(first_of(input().earlier_loads), (std::vector<double>{0, 1, 2, 3, 4})) << "as far back as there is";
  for (int step = 7; step < 30; ++step) monitor.record({{double(step), 1.0}});
  EXPECT_EQ(first_of(input().recent_loads), (std::vector<double>{25, 26, 27, 28, 29}));
  EXPECT_EQ(first_of(input().earlier_loads), (std::vector<double>{20, 21, 22, 23, 24}));
  // A long interval needs a longer history than the default 64 steps.
  config.balance.interval = 200;
  EXPECT_EQ(load_history_steps(config), 105u);
  LoadMonitor longer(1, 2, 5, load_history_steps(config));
  for (int step = 0; step < 300; ++step) longer.record({{double(step), 1.0}});
  const PlannerInput in = make_planner_input(config, longer, {Placement::contiguous(2, 2)}, CostMeasurements{.seconds_per_copy = 1e-6}, {}, {});
  EXPECT_EQ(first_of(in.earlier_loads), (std::vector<double>{195, 196, 197, 198, 199}));
}

}  // namespace moerun::test
