// Topology: how the world splits into groups. W = dp x ep. Expert-parallel (EP) groups are
// contiguous ranks (ep_rank = rank % ep), so the heavy all-to-all stays inside a node where
// possible; expert-data-parallel (EDP) groups join the ranks with the same ep_rank, which hold
// the same experts under a static placement. Every rank is data-parallel for the dense part.
//
//   world  0  1  2  3  4  5          (W = 6, ep = 3, dp = 2)
//   ep     [0  1  2][0  1  2]         EP groups: {0,1,2} {3,4,5}
//   edp    {0,3} {1,4} {2,5}         EDP groups: same ep_rank
#pragma once

#include <memory>
#include <vector>

#include "parallel/process_group.h"

namespace moerun {

class Topology {
 public:
  // Refuses (ConfigError) an ep that does not divide the world or the expert count.
  // ranks_per_node > 0 overrides the detected nodes: consecutive blocks of that many ranks
  // count as one node (parallel.ranks_per_node, to exercise multi-node paths on one machine).
  Topology(ProcessGroup& world, int ep, int experts, int ranks_per_node = 0);

  ProcessGroup& world() const { return world_; }
  ProcessGroup& ep_group() const { return *ep_group_; }
  ProcessGroup& edp_group() const { return *edp_group_; }
  ProcessGroup& node_group() const { return *node_group_; }
  int ep() const { return ep_; }
  int dp() const { return world_.size() / ep_; }
  int ep_rank() const { return world_.rank() % ep_; }
  int dp_rank() const { return world_.rank() / ep_; }
  // Nodes (each named by its lowest world rank): how many, the node of each EP-group member,
  // and whether a group of EP ranks or the EDP group spans more than one node.
  int nodes() const { return nodes_; }
  const std::vector<int>& node_of_ep_rank() const { return node_of_ep_rank_; }
  bool ep_ranks_span_nodes(const std::vector<int>& ep_ranks) const;
  bool edp_spans_nodes() const { return edp_spans_nodes_; }

 private:
  ProcessGroup& world_;
  int ep_;
  std::unique_ptr<ProcessGroup> ep_group_, edp_group_, node_group_;
  int nodes_ = 1;
  std::vector<int> node_of_ep_rank_;
  bool edp_spans_nodes_ = false;
};

}  // namespace moerun
