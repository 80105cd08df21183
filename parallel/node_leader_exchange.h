// The node-leader route of a token exchange, for EP groups that span nodes: rows between
// ranks of one node go directly; rows for other nodes are gathered by the node's leader (its
// lowest rank), the leaders exchange one message per pair of nodes, and each leader scatters
// what arrived to its node's ranks. Inter-node messages fall from one per pair of ranks,
// O(P^2), to one per pair of nodes, O(nodes^2); every row still arrives in the same place as
// with the flat exchange. Leaders need every pair's row count (needs_rank_matrix).
#pragma once

#include "parallel/row_exchange.h"

namespace moerun {

class NodeLeaderExchange final : public RowExchange {
 public:
  // Collective over `group`: splits the node group and the leaders' group.
  NodeLeaderExchange(ProcessGroup& group, std::vector<int> node_of_rank);
  std::string name() const override { return "hierarchical"; }
  bool needs_rank_matrix() const override { return true; }
  void exchange(std::span<const std::uint8_t> send, std::span<const std::int64_t> send_rows, std::span<std::uint8_t> recv,
                std::span<const std::int64_t> recv_rows, std::int64_t row_bytes, const RowsBetween& rows_between,
                DispatchStats& stats) override;

 private:
  ProcessGroup& group_;
  std::vector<int> node_ranks_;           // this node's ranks (of group_), ascending
  std::vector<std::vector<int>> nodes_;   // every node's ranks, in the leaders' group order
  std::size_t my_node_ = 0;               // index of this node in nodes_
  std::unique_ptr<ProcessGroup> node_group_, leader_group_;  // leader_group_: null on non-leaders
};

}  // namespace moerun
