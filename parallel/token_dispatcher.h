// TokenDispatcher: the narrow interface through which an MoE layer sends its token-copies to
// the ranks that hold their experts and gets the results back. The layer gives a count per
// global expert; the plan says in which order it hands the rows over (sorted by expert id,
// regrouped by destination rank when the placement needs it: DispatchPlan::send_order), and
// the dispatcher returns rows grouped by the experts hosted on this rank. The same plan serves
// the forward and the backward pass (gradients travel along the same routes).
//
// The dispatcher holds the placement it routes by: the one copy of it (the trainer reads it
// here and changes it through set_placement between iterations).
//
// LocalTokenDispatcher hosts every expert (one process): dispatch and combine are views.
// Collective contract for distributed implementations: every rank of the expert-parallel
// group calls plan, dispatch and combine in the same order.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "parallel/placement.h"
#include "runtime/tensor.h"

namespace moerun {

// The placement as the device sees it from one rank (static shapes): split i32 [experts, ep],
// how the rank's copies of each expert are shared over its replicas (Placement::split: all to
// the rank itself when it holds the expert); slot_of i32 [experts, ep], each expert's slot on
// each rank (-1: not there); local_slots i32 [slots per rank, 1], the local expert in each of
// this rank's slots (-1: unoccupied), the labels of its capacity-mode expert blocks.
struct SlotTable {
  Tensor split;
  Tensor slot_of;
  Tensor local_slots;
};
struct BlockRoute {
  std::vector<std::int32_t> order;                 // [ep * blocks * block]: received row of each expert-input row
  // Blocks x block per local expert; the unused places count as the last expert's (padding that
  // runs: every step runs all ep x blocks block matmuls; active_blocks says how many a backend
  // could skip).
  std::vector<std::int64_t> rows_per_local_expert;
  std::int64_t active_blocks = 0;                   // received blocks that hold copies
};

struct DispatchPlan {
  std::vector<std::int64_t> send_per_expert;       // [experts] rows this rank sends, by global expert
  std::vector<std::int64_t> recv_per_local_expert;  // [local experts] rows this rank receives per hosted expert
  // Per (source rank, local expert) received counts, source-major; distributed dispatchers
  // use it to regroup rows, the local one leaves it empty.
  std::vector<std::int64_t> recv_matrix;
  std::vector<std::int64_t> send_per_rank;  // [ep] rows to each rank (distributed only)
  std::vector<std::int64_t> recv_per_rank;  // [ep] rows from each rank (distributed only)
  // [ep x ep] rows each source rank sends to each destination, source-major (the
  // hierarchical exchange routes them through node leaders; empty otherwise).
  std::vector<std::int64_t> rank_matrix;
  std::int64_t rows_sent_remote = 0;  // rows that crossed to another rank (for byte accounting)
  std::int64_t rows_received = 0;
  // The order dispatch() takes rows in, as positions in the expert-sorted rows: send row i is
  // sorted row send_order[i], each destination rank's rows together. Empty: the sorted order is
  // the send order (one replica per expert, owners in expert order). The caller lays its rows
  // out in this order as it gathers them (the MoE layer permutes its row indices, not the
  // rows), so no copy of the rows regroups them.
  std::vector<std::int32_t> send_order;
};

// Communication done by a dispatcher since the last reset (for metrics and benchmarks).
struct DispatchStats {
  double seconds = 0.0;        // wall time inside the exchanges (counts and payloads)
  std::int64_t bytes_sent = 0;  // payload bytes sent to other ranks
  std::int64_t rows_sent = 0;   // token-copies sent to other ranks (forward and backward)
  // The same traffic by destination: another node, or this node; messages = non-empty sends.
  std::int64_t bytes_inter_node = 0;
  std::int64_t messages_intra_node = 0;
  std::int64_t messages_inter_node = 0;

  DispatchStats& operator+=(const DispatchStats& o) {
    seconds += o.seconds;
    bytes_sent += o.bytes_sent;
    rows_sent += o.rows_sent;
    bytes_inter_node += o.bytes_inter_node;
    messages_intra_node += o.messages_intra_node;
    messages_inter_node += o.messages_inter_node;
    return *this;
  }
};

class TokenDispatcher {
 public:
  virtual ~TokenDispatcher() = default;
  std::int64_t num_experts() const { return placement().experts(); }
  // Global ids of the experts hosted here, ascending.
  virtual const std::vector<int>& local_experts() const = 0;
  virtual const Placement& placement() const = 0;
  // Between iterations only: route by a new placement of the same experts over the same
  // group (the experts hosted here change with it).
  virtual void set_placement(Placement placement) = 0;
  // How payloads travel between ranks, for the start-up line: "none", "flat", "hierarchical".
  virtual std::string exchange_name() const = 0;
  // Exchanges counts; rows_per_expert has one entry per global expert.
  virtual DispatchPlan plan(std::span<const std::int64_t> rows_per_expert) = 0;
  // [sum(send_per_expert), d] in the plan's send order -> [rows_received, d] grouped by local
  // expert. May return a view of `rows`: keep `rows` alive while the result is used.
  virtual Tensor dispatch(const DispatchPlan& plan, const Tensor& rows) = 0;
  // The reverse: rows grouped by local expert -> rows in the send order.
  virtual Tensor combine(const DispatchPlan& plan, const Tensor& rows) = 0;
  // (optional) what crossed ranks since the last call; the local dispatcher sends nothing.
  virtual DispatchStats take_stats() { return {}; }

  // Static shapes (moe.shapes = static; docs/device.md): token-copies travel in fixed slots of
  // `capacity` rows, one slot per (destination rank, expert slot there), slots_per_rank() per
  // rank; rows a slot does not fill are padding. An expert's slot on a rank is its position
  // among that rank's local experts. No count exchange: every shape follows from the config.
  virtual int ep_rank() const = 0;
  virtual int slots_per_rank() const = 0;
  // This rank's slot table on `device`, uploaded again only when the placement changed (between
  // steps). A ConfigError when the placement puts more experts on a rank than slots_per_rank().
  const SlotTable& slot_table(Device& device);
  // The send buffer [ep * S * capacity, d] -> [S * ep * capacity, d]: each slot's rows, source
  // rank by source rank (the local experts' slots first, then unoccupied slots: all padding).
  // May return a view of `rows`.
  virtual Tensor dispatch_static(const Tensor& rows, std::int64_t capacity) = 0;
  // The reverse: [S * ep * capacity, d] back into the send buffer's layout.
  virtual Tensor combine_static(const Tensor& rows, std::int64_t capacity) = 0;

  // Blockwise dropless static shapes: each (destination rank, expert) share of this rank's
  // copies is cut into blocks of `block` rows (the last one padded); every rank sends `blocks`
  // block places to every rank, labelled with the destination-local expert (-1: unused), the
  // labels in a small fixed-size exchange of their own. Received blocks stay in [source][place]
  // order: the expert matmuls read the labels on the device (kernels::block_matmul).
  // The worst-case block places per destination for `copies` token-copies (all of them to one
  // rank, as many experts as can hold a partial block): ceil((copies - (P-1)) / block) + (P-1),
  // P = ep x slots per rank.
  std::int64_t worst_case_blocks(std::int64_t copies, std::int64_t block) const;
  // labels i32 [ep * blocks, 1] (the places this rank sends) -> the labels of the places it receives.
  virtual Tensor exchange_block_labels(const Tensor& labels) = 0;
  // [ep * blocks * block, d] send buffer -> the received blocks [ep * blocks * block, d], and back.
  virtual Tensor dispatch_blocks(const Tensor& rows) = 0;
  virtual Tensor combine_blocks(const Tensor& rows) = 0;

 private:
  SlotTable slot_table_;
  std::optional<Placement> table_placement_;  // the placement slot_table_ was built from
};

class LocalTokenDispatcher final : public TokenDispatcher {
 public:
  explicit LocalTokenDispatcher(int experts);
  const std::vector<int>& local_experts() const override { return experts_; }
  const Placement& placement() const override { return placement_; }
  void set_placement(Placement placement) override;
  std::string exchange_name() const override { return "none"; }
  DispatchPlan plan(std::span<const std::int64_t> rows_per_expert) override;
  Tensor dispatch(const DispatchPlan&, const Tensor& rows) override { return rows.view(); }
  Tensor combine(const DispatchPlan&, const Tensor& rows) override { return rows.view(); }
  int ep_rank() const override { return 0; }
  int slots_per_rank() const override { return static_cast<int>(experts_.size()); }
  // One rank, one slot per expert: the send buffer is already grouped by expert.
  Tensor dispatch_static(const Tensor& rows, std::int64_t) override { return rows.view(); }
  Tensor combine_static(const Tensor& rows, std::int64_t) override { return rows.view(); }
  // One rank: every block place is its own.
  Tensor exchange_block_labels(const Tensor& labels) override { return labels.view(); }
  Tensor dispatch_blocks(const Tensor& rows) override { return rows.view(); }
  Tensor combine_blocks(const Tensor& rows) override { return rows.view(); }

 private:
  Placement placement_;  // every expert on the one rank
  std::vector<int> experts_;
};

}  // namespace moerun
