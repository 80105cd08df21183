// EPLB (parallel/eplb.h) on synthetic loads, checked by its defining properties rather than by
// a second copy of the algorithm: equal slots per rank, replicas on distinct ranks inside one
// node, replica counts that satisfy the greedy's invariant (no expert could trade a replica to
// a more loaded one), and node loads no worse than the longest-processing-time bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "parallel/eplb.h"
#include "parallel/planner.h"
#include "runtime/error.h"

namespace moerun::test {
namespace {

std::vector<double> zipf_loads(int experts, double s, double total, unsigned shuffle) {
  std::vector<double> w(static_cast<std::size_t>(experts));
  for (int e = 0; e < experts; ++e) w[static_cast<std::size_t>(e)] = 1.0 / std::pow(e + 1.0, s);
  const double sum = std::accumulate(w.begin(), w.end(), 0.0);
  for (double& x : w) x *= total / sum;
  // A fixed permutation, so that hot experts are not all on the first rank.
  for (std::size_t i = 0; i < w.size(); ++i) std::swap(w[i], w[(i * 7 + shuffle) % w.size()]);
  return w;
}

struct Case {
  int experts, ep, ranks_per_node, slots;
  double zipf;
};

class Eplb : public ::testing::TestWithParam<Case> {};

TEST_P(Eplb, PlacementHasItsDefiningProperties) {
  const Case c = GetParam();
  const std::vector<double> loads = zipf_loads(c.experts, c.zipf, 10000.0, 3);
  std::vector<int> node_of_rank;
  for (int r = 0; r < c.ep; ++r) node_of_rank.push_back(r / c.ranks_per_node);
  const Placement p = plan_eplb(loads, c.ep, c.slots, node_of_rank);
  const int nodes = c.ep / c.ranks_per_node;

  // Equal slots per rank within the budget; every expert placed, replicas on distinct ranks of one node.
  for (int r = 0; r < c.ep; ++r) EXPECT_EQ(p.slots_used(r), p.slots_used(0)) << "rank " << r;
  EXPECT_LE(p.max_slots_used(), c.slots);
  std::vector<double> node_load(static_cast<std::size_t>(nodes), 0.0);
  std::vector<int> count(static_cast<std::size_t>(c.experts));
  for (int e = 0; e < c.experts; ++e) {
    const auto& reps = p.replicas(e);
    ASSERT_FALSE(reps.empty());
    std::set<int> ranks, nodes_of_e;
    for (const Replica& r : reps) ranks.insert(r.rank), nodes_of_e.insert(r.rank / c.ranks_per_node);
    EXPECT_EQ(ranks.size(), reps.size()) << "expert " << e << " has two replicas on one rank";
    EXPECT_EQ(nodes_of_e.size(), 1u) << "expert " << e << " replicated across nodes";
    node_load[static_cast<std::size_t>(*nodes_of_e.begin())] += loads[static_cast<std::size_t>(e)];
    count[static_cast<std::size_t>(e)] = static_cast<int>(reps.size());
  }
  // Replica counts: within a node, no expert with two or more replicas has a lower load per
  // replica after losing one than another expert's load per replica (the greedy's invariant),
  // unless that other expert has a replica on every rank of the node already.
  for (int a = 0; a < c.experts; ++a)
    for (int b = 0; b < c.experts; ++b) {
      const auto ia = static_cast<std::size_t>(a), ib = static_cast<std::size_t>(b);
      if (a == b || count[ia] < 2 || count[ib] >= c.ranks_per_node) continue;
      if (p.replicas(a)[0].rank / c.ranks_per_node != p.replicas(b)[0].rank / c.ranks_per_node) continue;
      EXPECT_GE(loads[ia] / (count[ia] - 1) + 1e-9, loads[ib] / count[ib]) << "experts " << a << " and " << b;
    }
  // Node loads: the longest-processing-time packing is within 4/3 of the optimum, whose lower
  // bound is max(mean node load, heaviest expert).
  const double total = std::accumulate(loads.begin(), loads.end(), 0.0);
  const double lower = std::max(total / nodes, *std::max_element(loads.begin(), loads.end()));
  EXPECT_LE(*std::max_element(node_load.begin(), node_load.end()), 4.0 / 3.0 * lower + 1e-9);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Eplb,
                         ::testing::Values(Case{8, 2, 2, 5, 1.2}, Case{8, 4, 4, 3, 1.2}, Case{16, 4, 2, 5, 0.8},
                                           Case{16, 8, 4, 3, 1.6}, Case{64, 16, 8, 5, 1.2}, Case{64, 16, 4, 4, 0.0},
                                           Case{32, 8, 8, 4, 2.5}));

TEST(EplbPlanner, BalancesASkewedLoadWithSpareSlotsAndMovesStateToGetThere) {
  const int experts = 16, ep = 4;
  PlannerInput in;
  in.loads = {zipf_loads(experts, 1.2, 16384, 5)};
  in.current = {Placement::contiguous(experts, ep)};
  in.cost.seconds_per_copy = 1e-5;
  in.cost.bandwidth = in.cost.migration_bandwidth = 5e9;
  in.cost.expert_state_bytes = 1 << 20;
  in.policy = BalancePolicy::Eplb;
  in.max_experts_per_rank = experts / ep + 2;
  in.node_of_rank = {0, 0, 1, 1};
  const PlannerDecision d = plan_placement(in);
  ASSERT_TRUE(d.apply) << d.reason;
  EXPECT_EQ(d.chosen, BalancePolicy::Eplb);
  EXPECT_LT(d.after.imbalance, 1.15);
  EXPECT_GT(d.before.imbalance, 1.3);
  EXPECT_GT(d.migrate_bytes, 0.0);
  EXPECT_EQ(balance_policy_name(BalancePolicy::Eplb), "eplb");
}

TEST(EplbPlanner, UnequalNodesFallBackToOneNodeAndExpertsMustDivide) {
  const std::vector<double> loads = zipf_loads(6, 1.0, 600, 1);
  const Placement p = plan_eplb(loads, 3, 3, {0, 0, 1});  // nodes of 2 and 1 ranks
  EXPECT_LE(p.max_slots_used(), 3);
  EXPECT_THROW(plan_eplb(zipf_loads(7, 1.0, 700, 1), 2, 4, {}), ConfigError);
}

}  // namespace
}  // namespace moerun::test
