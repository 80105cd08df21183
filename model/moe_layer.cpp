#include "model/moe_layer.h"

#include "model/param_names.h"

#include <chrono>
#include <numeric>

#include "kernels/elementwise.h"
#include "kernels/index.h"
#include "kernels/matmul.h"
#include "kernels/quantize.h"
#include "kernels/routing.h"
#include "runtime/error.h"
#include "runtime/trace.h"

namespace moerun {

MoeLayer::MoeLayer(ParameterStore& params, const ModelConfig& config, int layer, TokenDispatcher& dispatcher,
                   Readout& readout)
    : config_(config),
      layer_(layer),
      dispatcher_(dispatcher),
      router_(make_router(config.router, params, config, layer)),
      experts_(std::make_unique<FeedForwardSet>(params, config, expert_prefix(layer), dispatcher.local_experts(),
                                                ParamKind::Expert, layer)),
      readout_(readout),
      counts_slot_(readout.reserve(2 * config.experts)),
      losses_slot_(readout.reserve(2)),
      blocks_slot_(readout.reserve(1)) {
  if (config.shared_experts > 0) {  // dense parameters: every rank holds and computes them
    shared_ = std::make_unique<FeedForwardSet>(params, config, block_prefix(layer) + ".moe.shared", std::vector<int>{0},
                                               ParamKind::Dense, layer, true, config.shared_width());
  }
  MOERUN_CHECK(dispatcher.num_experts() == config.experts, RuntimeError,
               "[moe layer {}] the dispatcher routes to {} experts but the model has {}", layer, dispatcher.num_experts(),
               config.experts);
}

void MoeLayer::attach_local_experts(ParameterStore& params) {
  experts_ = std::make_unique<FeedForwardSet>(params, config_, expert_prefix(layer_), dispatcher_.local_experts(),
                                              ParamKind::Expert, layer_, /*create=*/false);
  experts_->set_recompute_hidden(recompute_experts_);
}

void MoeLayer::set_recompute_experts(bool on) {
  recompute_experts_ = on;
  experts_->set_recompute_hidden(on);
  if (shared_) shared_->set_recompute_hidden(on);
}

void MoeLayer::release() {
  experts_->release();
  if (shared_) shared_->release();
  router_->release();
  for (Tensor* t : {&token_of_row_, &gate_of_row_, &row_gates_, &routed_, &expert_in_, &expert_out_, &routed_out_,
                    &send_labels_, &recv_labels_})
    *t = Tensor();
}

void MoeLayer::lay_out_rows(const Tensor& index) {
  Device& dev = index.device();
  const std::int64_t tokens = index.dim(0), experts = config_.experts, copies = tokens * config_.top_k;
  const std::int64_t ep = dispatcher_.placement().ep_size();
  Tensor counts(dev, {2, experts});
  Tensor blocks_used;
  DispatchLayoutArgs layout{.index = &index, .capacity = config_.capacity(tokens), .counts = &counts};
  std::int64_t rows = copies;  // dynamic: the kept copies sorted by expert, then unused rows
  if (config_.static_shapes()) {  // the send buffer's fixed slots or blocks (docs/device.md)
    const SlotTable& table = dispatcher_.slot_table(dev);
    layout.split = &table.split;
    layout.slot_of = &table.slot_of;
    if (config_.blockwise()) {
      layout.block = config_.block_size;
      layout.blocks = dispatcher_.worst_case_blocks(copies, layout.block);
      send_labels_ = Tensor(dev, {ep * layout.blocks, 1}, DType::I32);
      layout.labels = &send_labels_;
      rows = ep * layout.blocks * layout.block;
      if (!recomputing_) {
        blocks_used = readout_.slots(blocks_slot_, 1);
        layout.blocks_used = &blocks_used;
        host_stats_.blocks_worst_case += ep * layout.blocks;
      }
    } else {
      capacity_ = layout.capacity;
      layout.slots = dispatcher_.slots_per_rank();
      rows = ep * layout.slots * capacity_;
    }
  }
  token_of_row_ = Tensor(dev, {rows}, DType::I32);
  gate_of_row_ = Tensor(dev, {rows}, DType::I32);
  layout.token_of_row = &token_of_row_;
  layout.gate_of_row = &gate_of_row_;
  kernels::dispatch_layout(layout);
  if (!recomputing_) {  // read at the step's end
    Tensor step_counts = readout_.slots(counts_slot_, 2 * experts);
    const Tensor counts_flat = counts.reshaped({2 * experts});
    kernels::axpy({.alpha = 1.0f, .x = &counts_flat, .y = &step_counts});
  }
  if (!config_.static_shapes()) plan_dynamic_exchange(counts);
}

void MoeLayer::plan_dynamic_exchange(const Tensor& counts) {
  // Dynamic shapes size the exchange from the kept counts: read on the host.
  const std::vector<float> host = counts.to_host();  // [routed per expert, kept per expert]
  std::vector<std::int64_t> kept(host.begin() + config_.experts, host.end());
  dispatch_ = dispatcher_.plan(kept);
  const std::int64_t total = std::accumulate(kept.begin(), kept.end(), std::int64_t{0});
  // Rows are gathered, exchanged and scattered back through these indices. Kept: as many as
  // kept copies. In the plan's send order (when it has one) they lay the rows out for the
  // exchange as they are gathered, so no copy of the rows regroups them.
  const bool reorder = !dispatch_.send_order.empty();
  const Tensor order = reorder ? Tensor::from_host(counts.device(), {total}, dispatch_.send_order) : Tensor();
  for (Tensor* t : {&token_of_row_, &gate_of_row_}) {
    Tensor used(t->device(), {total}, DType::I32);
    if (reorder) {
      const Tensor sorted = t->rows(0, total).reshaped({total, 1});
      Tensor used_rows = used.reshaped({total, 1});
      kernels::gather_rows({.src = &sorted, .index = &order, .dst = &used_rows});
    } else {
      used.copy_from(t->rows(0, total));
    }
    *t = std::move(used);
  }
}

MoeStats MoeLayer::stats() const {
  MoeStats s = host_stats_;
  const std::size_t experts = static_cast<std::size_t>(config_.experts);
  s.assigned_per_expert.resize(experts);
  s.kept_per_expert.resize(experts);
  s.dropped = 0;
  for (std::size_t e = 0; e < experts; ++e) {
    s.assigned_per_expert[e] = static_cast<std::int64_t>(readout_.value(counts_slot_ + std::int64_t(e)));
    s.kept_per_expert[e] = static_cast<std::int64_t>(readout_.value(counts_slot_ + config_.experts + std::int64_t(e)));
    s.dropped += s.assigned_per_expert[e] - s.kept_per_expert[e];
  }
  s.aux_loss = readout_.value(losses_slot_);
  s.z_loss = readout_.value(losses_slot_ + 1);
  s.blocks_active = static_cast<std::int64_t>(readout_.value(blocks_slot_));
  return s;
}

Tensor MoeLayer::to_experts(const Tensor& rows) {
  if (config_.blockwise()) return dispatcher_.dispatch_blocks(rows);
  return config_.static_shapes() ? dispatcher_.dispatch_static(rows, capacity_) : dispatcher_.dispatch(dispatch_, rows);
}

Tensor MoeLayer::from_experts(const Tensor& rows) {
  if (config_.blockwise()) return dispatcher_.combine_blocks(rows);
  return config_.static_shapes() ? dispatcher_.combine_static(rows, capacity_) : dispatcher_.combine(dispatch_, rows);
}

Tensor MoeLayer::forward(const Tensor& h) {
  Device& dev = h.device();
  const std::int64_t n = h.dim(0), d = config_.d_model, k = config_.top_k;
  // 1. Route: each token's experts and gates, balancing losses, the copies each expert keeps.
  Tensor losses = recomputing_ ? Tensor::zeros(dev, {2}) : readout_.slots(losses_slot_, 2);
  const RouterOutput& route = router_->forward(h, losses);
  lay_out_rows(route.index);
  const std::int64_t rows = token_of_row_.dim(0);
  row_gates_ = Tensor(dev, {rows, 1});
  kernels::gather_rows({.src = &route.gates, .index = &gate_of_row_, .dst = &row_gates_});
  // 2. Dispatch token-copies to the experts' ranks, run the experts, combine.
  routed_ = Tensor(dev, {rows, d}, h.dtype());  // the exchange carries the compute dtype
  kernels::gather_rows({.src = &h, .index = &token_of_row_, .dst = &routed_});
  if (config_.blockwise()) recv_labels_ = dispatcher_.exchange_block_labels(send_labels_);
  expert_in_ = dispatch_tokens(routed_);
  const auto expert_start = std::chrono::steady_clock::now();
  {
    const trace::Scope span("experts", "experts forward", layer_);
    if (config_.blockwise()) {  // blocks labelled on the device with their local expert
      expert_out_ = experts_->forward_blocks(expert_in_, recv_labels_, config_.block_size);
    } else if (config_.static_shapes()) {  // one block per slot: ep x capacity rows of one expert or padding
      const Tensor& slots = dispatcher_.slot_table(dev).local_slots;
      expert_out_ = experts_->forward_blocks(expert_in_, slots, dispatcher_.placement().ep_size() * capacity_);
    } else {
      expert_out_ = experts_->forward(expert_in_, dispatch_.recv_per_local_expert);
    }
    dev.synchronize();
  }
  host_stats_.expert_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - expert_start).count();
  routed_out_ = from_experts(expert_out_);
  // 3. Gate-weighted sum back onto the tokens (padding rows add nothing).
  Tensor y = Tensor::zeros(dev, {n, d});
  const Tensor gates_flat = row_gates_.reshaped({rows});
  kernels::scatter_add_rows({.src = &routed_out_, .index = &token_of_row_, .scale = &gates_flat, .dst = &y});
  if (shared_) {  // the always-active experts, on every token
    const std::int64_t shared_rows[] = {n};
    const Tensor shared_out = shared_->forward(h, shared_rows);
    kernels::binary({.op = BinaryOp::Add, .a = &y, .b = &shared_out, .out = &y});
  }
  if (!recomputing_) host_stats_.copies += n * k;
  return y;
}

Tensor MoeLayer::dispatch_tokens(const Tensor& rows) {
  Device& dev = rows.device();
  const std::int64_t d = rows.dim(1);
  if (config_.dispatch_dtype == DispatchDtype::Fp8) {
    const std::int64_t block = config_.fp8_scale_block > 0 ? config_.fp8_scale_block : d;
    Tensor packed(dev, {rows.dim(0), kernels::fp8_row_bytes(d, block)}, DType::U8);
    kernels::quantize_fp8({.x = &rows, .packed = &packed, .block = block});
    Tensor arrived = to_experts(packed);
    Tensor out(dev, {arrived.dim(0), d}, rows.dtype());
    kernels::dequantize_fp8({.packed = &arrived, .block = block, .y = &out});
    return out;
  }
  if (config_.dispatch_dtype == DispatchDtype::Bf16 && rows.dtype() != DType::BF16) {
    Tensor narrow(dev, rows.shape(), DType::BF16);
    kernels::convert(rows, narrow);
    Tensor arrived = to_experts(narrow);
    Tensor out(dev, arrived.shape(), rows.dtype());
    kernels::convert(arrived, out);
    return out;
  }
  return to_experts(rows);
}

Tensor MoeLayer::backward(const Tensor& dy, double aux_scale) {
  Device& dev = dy.device();
  const std::int64_t n = dy.dim(0), d = config_.d_model, rows = token_of_row_.dim(0);
  // Gate-weighted sum: d routed_out = gate * dy[token], d gate = <routed_out, dy[token]>.
  Tensor dy_rows(dev, {rows, d});
  kernels::gather_rows({.src = &dy, .index = &token_of_row_, .dst = &dy_rows});
  Tensor drow_gates(dev, {rows, 1});
  Tensor drow_gates_flat = drow_gates.reshaped({rows});
  kernels::row_dot({.a = &routed_out_, .b = &dy_rows, .out = &drow_gates_flat});
  routed_out_ = Tensor();
  const Tensor gates_flat = row_gates_.reshaped({rows});
  Tensor drouted_out(dev, {rows, d}, config_.compute_dtype);
  kernels::gather_rows({.src = &dy, .index = &token_of_row_, .scale = &gates_flat, .dst = &drouted_out});
  dy_rows = Tensor();
  // Experts, along the same routes: gradients of outputs go to the ranks that computed them.
  Tensor dexpert_out = to_experts(drouted_out);
  const auto expert_start = std::chrono::steady_clock::now();
  Tensor dexpert_in;
  {
    const trace::Scope span("experts", "experts backward", layer_);
    dexpert_in = experts_->backward(dexpert_out);
    dev.synchronize();
  }
  host_stats_.expert_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - expert_start).count();
  expert_out_ = Tensor();
  Tensor drouted = from_experts(dexpert_in);
  Tensor dh = Tensor::zeros(dev, {n, d});
  kernels::scatter_add_rows({.src = &drouted, .index = &token_of_row_, .dst = &dh});
  drouted = Tensor();
  dexpert_in = Tensor();
  expert_in_ = Tensor();
  routed_ = Tensor();
  if (shared_) {
    const Tensor dh_shared = shared_->backward(dy);
    kernels::binary({.op = BinaryOp::Add, .a = &dh, .b = &dh_shared, .out = &dh});
  }
  // Router: its weights, and its part of dh, from the gates' gradient and the balancing losses.
  Tensor dgates = Tensor::zeros(dev, {n * config_.top_k, 1});
  kernels::scatter_add_rows({.src = &drow_gates, .index = &gate_of_row_, .dst = &dgates});
  router_->backward(dgates, aux_scale, dh);
  for (Tensor* t : {&token_of_row_, &gate_of_row_, &row_gates_, &send_labels_, &recv_labels_}) *t = Tensor();
  return dh;
}

}  // namespace moerun
