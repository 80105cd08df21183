// EPLB: the expert-parallel load balancer DeepSeek published with V3 (github.com/deepseek-ai/EPLB),
// written here from its description so that the planner's studies can put it beside moerun's
// own policies under one cost model (balance.policy = eplb). Hierarchical, for an EP group
// that spans nodes:
//   1. pack experts onto nodes by load, the same number of experts on every node (heaviest
//      first, onto the lightest node with room), so that inter-node traffic stays balanced;
//   2. within each node, spend the node's spare slots on replicas: repeatedly one more replica
//      for the expert with the highest load per replica;
//   3. pack the node's replicas onto its ranks by load per replica, the same number of slots
//      on every rank, heaviest first onto the lightest rank with room.
// One node (or nodes that do not divide the experts) is the same with a single node.
// Differences from the published code, both forced by moerun's Placement: a rank never holds
// two replicas of one expert (EPLB may put them on one GPU), and a node can give an expert at
// most as many replicas as it has ranks. EPLB ignores the current placement: what it costs to
// move there is the planner's to judge.
#pragma once

#include <vector>

#include "parallel/placement.h"

namespace moerun {

// loads[e]: token-copies of expert e per step; slots: expert slots per rank (replicas
// included; at least experts / ep); node_of_rank[r]: the node of ep_rank r (empty: one node).
Placement plan_eplb(const std::vector<double>& loads, int ep_size, int slots, const std::vector<int>& node_of_rank);

}  // namespace moerun
