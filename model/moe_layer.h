// One MoE feed-forward layer: the router (router.h: a policy chosen by model.router, which
// also owns capacity and the balancing losses), dispatch of token-copies to the experts
// (through a TokenDispatcher, so the same code runs on one process or many), the experts'
// FFNs, combine, and the gate-weighted sum; with model.shared_experts, an always-active FFN on
// every token added to it. Dropped token-copies contribute nothing here and pass via the
// residual.
//
// The copies travel as rows: token_of_row (which token) and gate_of_row (which of the
// token's k gates). With dynamic shapes the rows are the kept copies sorted by expert; with
// static shapes (moe.shapes = static) they are the dispatcher's fixed send slots, and rows no
// copy fills are padding (index -1: zero rows that add nothing). The rest of the layer is the
// same code for both.
#pragma once

#include <memory>
#include <vector>

#include "parallel/token_dispatcher.h"
#include "model/feed_forward.h"
#include "model/param_names.h"
#include "model/router.h"
#include "runtime/readout.h"

namespace moerun {

// What the layer's forwards saw since reset_stats(), for the loss, the metrics and the load
// monitor. The counts and losses are summed on the device and come from the model's Readout
// (valid after its read()); the rest is known on the host.
struct MoeStats {
  std::vector<std::int64_t> assigned_per_expert;  // token-copies routed to each expert (before capacity)
  std::vector<std::int64_t> kept_per_expert;      // token-copies each expert processes (after capacity)
  std::int64_t copies = 0;                        // tokens x top_k
  std::int64_t dropped = 0;
  double aux_loss = 0.0;  // coefficient included
  double z_loss = 0.0;    // coefficient included
  double expert_seconds = 0.0;  // this rank's expert FFN time, forward + backward
  // Blockwise static shapes: blocks this rank filled, and the block places its send buffers
  // have (the worst case, every destination).
  std::int64_t blocks_active = 0;
  std::int64_t blocks_worst_case = 0;
};

class MoeLayer {
 public:
  // Reserves the layer's slots in `readout` (the step's device values: counts and losses).
  MoeLayer(ParameterStore& params, const ModelConfig& config, int layer, TokenDispatcher& dispatcher, Readout& readout);
  // h [tokens, d], kept alive by the caller until backward. Returns the layer output [tokens, d].
  Tensor forward(const Tensor& h);
  // dy [tokens, d]; aux_scale weighs this micro-batch's aux and z losses in the total loss.
  Tensor backward(const Tensor& dy, double aux_scale);
  // After the readout's read(): what the forwards since reset_stats() saw.
  MoeStats stats() const;
  // train.recompute = moe: the experts drop their hidden activations in forward.
  void set_recompute_experts(bool on);
  // Forgets what forward saved (train.recompute = full runs forward again before backward).
  void release();
  // train.recompute = full: the forward that runs again before backward adds no counts or
  // losses (the first one did).
  void set_recomputing(bool on) { recomputing_ = on; }
  // The host's share of the statistics; the device's is cleared with the readout.
  void reset_stats() { host_stats_ = {}; }
  // Between steps, after the placement changed: rebuild the expert FFNs from the parameters
  // of the experts the dispatcher now routes here (they must already be in `params`).
  void attach_local_experts(ParameterStore& params);
  static std::string expert_prefix(int layer) { return block_prefix(layer) + ".moe.experts"; }
  // Once per optimizer step: the world's routed copies per expert (router.h's after_step).
  void after_step(const std::vector<std::int64_t>& routed_per_expert) { router_->after_step(routed_per_expert); }
  // The dispatch plan of the last forward (which rows crossed ranks).
  const DispatchPlan& last_plan() const { return dispatch_; }

 private:
  const ModelConfig& config_;
  int layer_;
  TokenDispatcher& dispatcher_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<FeedForwardSet> experts_;
  std::unique_ptr<FeedForwardSet> shared_;  // model.shared_experts > 0: every token, every rank
  bool recompute_experts_ = false;
  bool recomputing_ = false;
  Readout& readout_;
  std::int64_t counts_slot_ = 0;  // readout slots: [2, experts] routed and kept copies
  std::int64_t losses_slot_ = 0;  // readout slots: {aux, z}
  std::int64_t blocks_slot_ = 0;  // readout slot: block places filled (blockwise)
  MoeStats host_stats_;           // copies, expert seconds, worst-case blocks
  // The forward dispatch, in parallel.dispatch_dtype: rows leave as computed, rounded to
  // bf16, or packed as fp8 with scales, and arrive in the compute dtype.
  Tensor dispatch_tokens(const Tensor& rows);
  // Builds token_of_row_ and gate_of_row_ on the device from the router's choices (and
  // dispatch_, capacity_ or send_labels_, as the shapes need); adds the counts to the readout.
  void lay_out_rows(const Tensor& index);
  // Dynamic shapes: the exchange plan from the kept counts (counts f32 [2, experts], read on
  // the host), and the row tables cut to the kept copies.
  void plan_dynamic_exchange(const Tensor& counts);
  // The exchange there and back: planned (dynamic) or in fixed slots (static).
  Tensor to_experts(const Tensor& rows);
  Tensor from_experts(const Tensor& rows);

  // Saved by forward for backward (the router keeps its own).
  DispatchPlan dispatch_;                // dynamic shapes only
  std::int64_t capacity_ = 0;            // static capacity mode: rows per slot
  Tensor send_labels_;                   // blockwise: i32 [ep * blocks, 1], the local expert of each block sent
  Tensor recv_labels_;                   // blockwise: the same for the blocks received
  Tensor token_of_row_;                  // i32 [rows]: source token, -1 for padding
  Tensor gate_of_row_;                   // i32 [rows]: index into the router's [tokens * k] gates, -1 for padding
  Tensor row_gates_;                     // [rows, 1]: each row's gate (0 for padding)
  Tensor routed_;                        // [rows, d] inputs in row order
  Tensor expert_in_;                     // [received, d] (may view routed_)
  Tensor expert_out_;                    // [received, d]
  Tensor routed_out_;                    // [rows, d] (may view expert_out_)
};

}  // namespace moerun
