// AllToAllDispatcher: token dispatch over an expert-parallel group with MPI all-to-all-v.
// plan() exchanges per-expert counts; dispatch() sends each token-copy to the rank holding
// its expert and regroups the received rows by local expert; combine() is the exact reverse.
// Rows for experts on this rank are copied on the device and never go through MPI.
//
// Received rows are grouped [local expert][source rank] so that each expert's rows are
// contiguous for the grouped matmul. Replicated experts: each source splits its copies over
// the replicas by Placement::split (a source holding a replica keeps its copies local).
//
// Hierarchical exchange (set_nodes with hierarchical = true), for EP groups that span nodes:
// rows between ranks of one node go directly; rows for other nodes are gathered by the node's
// leader (its lowest rank), the leaders exchange one message per pair of nodes, and each
// leader scatters what arrived to its node's ranks. Inter-node messages fall from one per pair
// of ranks, O(P^2), to one per pair of nodes, O(nodes^2); every row still arrives in the same
// place as with the flat exchange.
#pragma once

#include <functional>
#include <memory>

#include "parallel/placement.h"
#include "parallel/process_group.h"
#include "parallel/token_dispatcher.h"

namespace moerun {

class AllToAllDispatcher final : public TokenDispatcher {
 public:
  AllToAllDispatcher(ProcessGroup& ep_group, Placement placement);
  const std::vector<int>& local_experts() const override { return local_; }
  DispatchPlan plan(std::span<const std::int64_t> rows_per_expert) override;
  Tensor dispatch(const DispatchPlan& plan, const Tensor& rows) override;
  Tensor combine(const DispatchPlan& plan, const Tensor& rows) override;
  DispatchStats take_stats() override;
  const Placement& placement() const override { return placement_; }
  void set_placement(Placement placement) override;
  std::string exchange_name() const override { return hierarchical() ? "hierarchical" : "flat"; }
  // The node of each EP rank (Topology::node_of_ep_rank), for the intra/inter-node accounting
  // and, with `hierarchical`, the route through node leaders. Collective over the EP group
  // (it creates the node and leader groups); every rank passes the same arguments.
  void set_nodes(std::vector<int> node_of_rank, bool hierarchical = false);
  bool hierarchical() const { return node_group_ != nullptr; }

 private:
  // Rows in [source rank][local expert] order <-> rows in [local expert][source rank] order.
  std::vector<std::int32_t> by_expert_order(const DispatchPlan& plan) const;
  // Rows sorted by expert id -> rows sorted by (destination rank, expert id).
  std::vector<std::int32_t> by_rank_order(const DispatchPlan& plan) const;
  // The payload exchange: `send` blocks per rank (send_rows[r] rows), into `recv`.
  // rows_between(s, r): rows source rank s sends to rank r in this exchange (hierarchical only).
  void exchange(const Tensor& send, std::span<const std::int64_t> send_rows, Tensor& recv,
                std::span<const std::int64_t> recv_rows, const std::function<std::int64_t(int, int)>& rows_between);
  // The exchange through node leaders, on host buffers; the own block is left to the caller.
  void exchange_via_leaders(const float* send, std::span<const std::int64_t> send_rows, float* recv,
                            std::span<const std::int64_t> recv_rows, std::int64_t d,
                            const std::function<std::int64_t(int, int)>& rows_between);
  void count_message(std::int64_t rows, std::int64_t d, bool inter_node);

  ProcessGroup& group_;
  Placement placement_;
  std::vector<int> local_;
  DispatchStats stats_;
  std::vector<int> node_of_rank_;  // empty: every rank on one node
  // Hierarchical exchange: this node's ranks (EP ranks, ascending), every node's ranks in
  // leader-group order, and the groups of this node and of the leaders (null on non-leaders).
  std::vector<int> node_ranks_;
  std::vector<std::vector<int>> nodes_;
  std::unique_ptr<ProcessGroup> node_group_, leader_group_;
};

}  // namespace moerun
