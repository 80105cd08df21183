// AllToAllDispatcher: token dispatch over an expert-parallel group with MPI all-to-all-v.
// plan() exchanges per-expert counts; dispatch() sends each token-copy to the rank holding
// its expert and regroups the received rows by local expert; combine() is the exact reverse.
// Rows for experts on this rank are copied on the device and never go through MPI.
//
// Received rows are grouped [local expert][source rank] so that each expert's rows are
// contiguous for the grouped matmul. Replicated experts: each source splits its copies over
// the replicas by Placement::split (a source holding a replica keeps its copies local).
//
// The payload travels by a RowExchange (row_exchange.h): flat, or through node leaders for EP
// groups that span nodes (set_nodes with hierarchical = true; node_leader_exchange.h).
#pragma once

#include <memory>

#include "parallel/placement.h"
#include "parallel/process_group.h"
#include "parallel/row_exchange.h"
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
  std::string exchange_name() const override { return exchange_->name(); }
  int ep_rank() const override { return group_.rank(); }
  int slots_per_rank() const override { return static_slots_; }
  // moe.shapes = static: the expert slots per rank (at least the most experts any placement
  // puts on a rank); 0 (the default) refuses the static calls.
  void set_static_slots(int slots) { static_slots_ = slots; }
  Tensor dispatch_static(const Tensor& rows, std::int64_t capacity) override;
  Tensor combine_static(const Tensor& rows, std::int64_t capacity) override;
  Tensor exchange_block_labels(const Tensor& labels) override;
  Tensor dispatch_blocks(const Tensor& rows) override;
  Tensor combine_blocks(const Tensor& rows) override;
  // The node of each EP rank (Topology::node_of_ep_rank), for the intra/inter-node accounting
  // and, with `hierarchical`, the route through node leaders. Collective over the EP group
  // (it creates the node and leader groups); every rank passes the same arguments.
  void set_nodes(std::vector<int> node_of_rank, bool hierarchical = false);

 private:
  // Rows in [source rank][local expert] order <-> rows in [local expert][source rank] order.
  std::vector<std::int32_t> by_expert_order(const DispatchPlan& plan) const;
  // Rows sorted by expert id -> rows sorted by (destination rank, expert id): the send order.
  std::vector<std::int32_t> by_rank_order(const DispatchPlan& plan) const;
  // The payload exchange: `send` blocks per rank (send_rows[r] rows), into `recv`; the own
  // block is copied on the device.
  void exchange(const Tensor& send, std::span<const std::int64_t> send_rows, Tensor& recv,
                std::span<const std::int64_t> recv_rows, const RowsBetween& rows_between);

  // The fixed exchange of static shapes: every rank sends the same share of `send` (its rows
  // over the group size) to every rank; returns what arrived, in source order.
  Tensor exchange_equal(const Tensor& send);
  // [source][slot][capacity] rows -> [slot][source][capacity]: the gather index.
  std::vector<std::int32_t> slot_major(std::int64_t capacity) const;

  ProcessGroup& group_;
  int static_slots_ = 0;
  Placement placement_;
  std::vector<int> local_;
  DispatchStats stats_;
  std::unique_ptr<RowExchange> exchange_;
};

}  // namespace moerun
