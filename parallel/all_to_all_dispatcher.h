// AllToAllDispatcher: token dispatch over an expert-parallel group with MPI all-to-all-v.
// plan() exchanges per-expert counts; dispatch() sends each token-copy to the rank holding
// its expert and regroups the received rows by local expert; combine() is the exact reverse.
// Rows for experts on this rank are copied on the device and never go through MPI.
//
// Received rows are grouped [local expert][source rank] so that each expert's rows are
// contiguous for the grouped matmul. Replicated experts: each source splits its copies over
// the replicas by Placement::split (a source holding a replica keeps its copies local).
#pragma once

#include "parallel/placement.h"
#include "parallel/process_group.h"
#include "parallel/token_dispatcher.h"

namespace moerun {

class AllToAllDispatcher final : public TokenDispatcher {
 public:
  AllToAllDispatcher(ProcessGroup& ep_group, Placement placement);
  std::int64_t num_experts() const override { return placement_.experts(); }
  const std::vector<int>& local_experts() const override { return local_; }
  DispatchPlan plan(std::span<const std::int64_t> rows_per_expert) override;
  Tensor dispatch(const DispatchPlan& plan, const Tensor& rows) override;
  Tensor combine(const DispatchPlan& plan, const Tensor& rows) override;
  DispatchStats take_stats() override;
  const Placement& placement() const { return placement_; }
  // Between iterations only: the experts this rank holds change with it.
  void set_placement(Placement placement);
  // The node of each EP rank (Topology::node_of_ep_rank), for the intra/inter-node accounting.
  void set_nodes(std::vector<int> node_of_rank) { node_of_rank_ = std::move(node_of_rank); }

 private:
  // Rows in [source rank][local expert] order <-> rows in [local expert][source rank] order.
  std::vector<std::int32_t> by_expert_order(const DispatchPlan& plan) const;
  // Rows sorted by expert id -> rows sorted by (destination rank, expert id).
  std::vector<std::int32_t> by_rank_order(const DispatchPlan& plan) const;
  // The payload exchange: `send` blocks per rank (send_rows[r] rows), into `recv`.
  void exchange(const Tensor& send, std::span<const std::int64_t> send_rows, Tensor& recv,
                std::span<const std::int64_t> recv_rows);

  ProcessGroup& group_;
  Placement placement_;
  std::vector<int> local_;
  DispatchStats stats_;
  std::vector<int> node_of_rank_;  // empty: every rank on one node
};

}  // namespace moerun
