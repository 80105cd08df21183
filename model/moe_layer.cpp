#include "model/moe_layer.h"

#include "model/param_names.h"

#include <chrono>
#include <numeric>

#include "kernels/elementwise.h"
#include "kernels/index.h"
#include "kernels/matmul.h"
#include "kernels/quantize.h"
#include "runtime/error.h"
#include "runtime/trace.h"

namespace moerun {

MoeLayer::MoeLayer(ParameterStore& params, const ModelConfig& config, int layer, TokenDispatcher& dispatcher)
    : config_(config),
      layer_(layer),
      dispatcher_(dispatcher),
      router_(make_router(config.router, params, config, layer)),
      experts_(std::make_unique<FeedForwardSet>(params, config, expert_prefix(layer), dispatcher.local_experts(),
                                                ParamKind::Expert, layer)) {
  if (config.shared_experts > 0) {  // dense parameters: every rank holds and computes them
    shared_ = std::make_unique<FeedForwardSet>(params, config, block_prefix(layer) + ".moe.shared", std::vector<int>{0},
                                               ParamKind::Dense, layer, true, config.shared_width());
  }
  if (config.blockwise()) experts_->set_block_rows(config.block_size);
  MOERUN_CHECK(dispatcher.num_experts() == config.experts, RuntimeError,
               "[moe layer {}] the dispatcher routes to {} experts but the model has {}", layer, dispatcher.num_experts(),
               config.experts);
}

void MoeLayer::attach_local_experts(ParameterStore& params) {
  experts_ = std::make_unique<FeedForwardSet>(params, config_, expert_prefix(layer_), dispatcher_.local_experts(),
                                              ParamKind::Expert, layer_, /*create=*/false);
  experts_->set_recompute_hidden(recompute_experts_);
  if (config_.blockwise()) experts_->set_block_rows(config_.block_size);
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
  for (Tensor* t : {&token_of_row_, &gate_of_row_, &row_gates_, &routed_, &expert_in_, &expert_out_, &routed_out_})
    *t = Tensor();
  routed_by_ = nullptr;
}

void MoeLayer::lay_out_rows(Device& dev, const RoutingPlan& routing, std::int64_t tokens) {
  if (!config_.static_shapes()) {  // the kept copies, sorted by expert: as many rows as copies
    token_of_row_ = Tensor::from_host(dev, {routing.kept()}, routing.token_of_copy);
    gate_of_row_ = Tensor::from_host(dev, {routing.kept()}, routing.slot_of_copy);
    return;
  }
  // Static: the send buffer's fixed slots or blocks, padding rows -1 (docs/device.md).
  std::vector<std::int32_t> at;
  std::int64_t rows = 0;
  const std::int64_t ep = dispatcher_.placement().ep_size();
  if (config_.blockwise()) {
    const std::int64_t b = config_.block_size;
    blocks_ = dispatcher_.static_send_blocks(routing.kept_per_expert, b,
                                             dispatcher_.worst_case_blocks(tokens * config_.top_k, b));
    at = blocks_.row_of_copy;
    rows = ep * blocks_.blocks * b;
  } else {
    capacity_ = config_.capacity(tokens);
    at = dispatcher_.static_send_rows(routing.kept_per_expert, capacity_);
    rows = ep * dispatcher_.slots_per_rank() * capacity_;
  }
  std::vector<std::int32_t> token(static_cast<std::size_t>(rows), -1), gate(static_cast<std::size_t>(rows), -1);
  for (std::size_t i = 0; i < at.size(); ++i) {
    token[static_cast<std::size_t>(at[i])] = routing.token_of_copy[i];
    gate[static_cast<std::size_t>(at[i])] = routing.slot_of_copy[i];
  }
  token_of_row_ = Tensor::from_host(dev, {rows}, token);
  gate_of_row_ = Tensor::from_host(dev, {rows}, gate);
}

Tensor MoeLayer::to_experts(const Tensor& rows) {
  if (config_.blockwise()) return dispatcher_.dispatch_blocks(block_route_, rows);
  return config_.static_shapes() ? dispatcher_.dispatch_static(rows, capacity_) : dispatcher_.dispatch(dispatch_, rows);
}

Tensor MoeLayer::from_experts(const Tensor& rows) {
  if (config_.blockwise()) return dispatcher_.combine_blocks(block_route_, rows);
  return config_.static_shapes() ? dispatcher_.combine_static(rows, capacity_) : dispatcher_.combine(dispatch_, rows);
}

Tensor MoeLayer::forward(const Tensor& h) {
  Device& dev = h.device();
  const std::int64_t n = h.dim(0), d = config_.d_model, k = config_.top_k;
  // 1. Route: each token's experts and gates, the copies each expert keeps, balancing losses.
  const RouterOutput& route = router_->forward(h);
  routed_by_ = &route;
  lay_out_rows(dev, route.routing, n);
  const std::int64_t rows = token_of_row_.dim(0);
  row_gates_ = Tensor(dev, {rows, 1});
  kernels::gather_rows({.src = &route.gates, .index = &gate_of_row_, .dst = &row_gates_});
  // 2. Dispatch token-copies to the experts' ranks, run the experts, combine.
  routed_ = Tensor(dev, {rows, d}, h.dtype());  // the exchange carries the compute dtype
  kernels::gather_rows({.src = &h, .index = &token_of_row_, .dst = &routed_});
  std::vector<std::int64_t> expert_rows;
  if (config_.blockwise()) {
    block_route_ = dispatcher_.plan_blocks(blocks_, config_.block_size);
    expert_rows = block_route_.rows_per_local_expert;
    stats_.blocks_active += blocks_.active;
    stats_.blocks_worst_case += blocks_.blocks * dispatcher_.placement().ep_size();
  } else if (config_.static_shapes()) {
    expert_rows.assign(dispatcher_.local_experts().size(), std::int64_t{dispatcher_.placement().ep_size()} * capacity_);
  } else {
    dispatch_ = dispatcher_.plan(route.routing.kept_per_expert);
    expert_rows = dispatch_.recv_per_local_expert;
  }
  expert_in_ = dispatch_tokens(routed_);
  const auto expert_start = std::chrono::steady_clock::now();
  {
    const trace::Scope span("experts", "experts forward", layer_);
    expert_out_ = experts_->forward(expert_in_, expert_rows);
    dev.synchronize();
  }
  stats_.expert_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - expert_start).count();
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
  stats_.assigned_per_expert = route.routing.assigned_per_expert;
  stats_.kept_per_expert = route.routing.kept_per_expert;
  stats_.copies = n * k;
  stats_.dropped = route.routing.dropped;
  stats_.aux_loss = route.aux_loss;
  stats_.z_loss = route.z_loss;
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
  stats_.expert_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - expert_start).count();
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
  for (Tensor* t : {&token_of_row_, &gate_of_row_, &row_gates_}) *t = Tensor();
  routed_by_ = nullptr;
  return dh;
}

}  // namespace moerun
