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
  for (Tensor* t : {&token_of_copy_, &routed_, &expert_in_, &expert_out_, &routed_out_}) *t = Tensor();
  routed_by_ = nullptr;
}

Tensor MoeLayer::forward(const Tensor& h) {
  Device& dev = h.device();
  const std::int64_t n = h.dim(0), d = config_.d_model, k = config_.top_k;
  // 1. Route: each token's experts and gates, the copies each expert keeps, balancing losses.
  const RouterOutput& route = router_->forward(h);
  routed_by_ = &route;
  const std::int64_t kept = route.routing.kept();
  token_of_copy_ = Tensor::from_host(dev, {kept}, route.routing.token_of_copy);
  // 2. Dispatch token-copies to the experts' ranks, run the experts, combine.
  routed_ = Tensor(dev, {kept, d}, h.dtype());  // the exchange carries the compute dtype
  kernels::gather_rows({.src = &h, .index = &token_of_copy_, .dst = &routed_});
  dispatch_ = dispatcher_.plan(route.routing.kept_per_expert);
  expert_in_ = dispatch_tokens(routed_);
  const auto expert_start = std::chrono::steady_clock::now();
  {
    const trace::Scope span("experts", "experts forward", layer_);
    expert_out_ = experts_->forward(expert_in_, dispatch_.recv_per_local_expert);
    dev.synchronize();
  }
  stats_.expert_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - expert_start).count();
  routed_out_ = dispatcher_.combine(dispatch_, expert_out_);
  // 3. Gate-weighted sum back onto the tokens.
  Tensor y = Tensor::zeros(dev, {n, d});
  const Tensor gates_flat = route.copy_gates.reshaped({kept});
  kernels::scatter_add_rows({.src = &routed_out_, .index = &token_of_copy_, .scale = &gates_flat, .dst = &y});
  if (shared_) {  // the always-active experts, on every token
    const std::int64_t rows[] = {n};
    const Tensor shared_out = shared_->forward(h, rows);
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
    Tensor arrived = dispatcher_.dispatch(dispatch_, packed);
    Tensor out(dev, {arrived.dim(0), d}, rows.dtype());
    kernels::dequantize_fp8({.packed = &arrived, .block = block, .y = &out});
    return out;
  }
  if (config_.dispatch_dtype == DispatchDtype::Bf16 && rows.dtype() != DType::BF16) {
    Tensor narrow(dev, rows.shape(), DType::BF16);
    kernels::convert(rows, narrow);
    Tensor arrived = dispatcher_.dispatch(dispatch_, narrow);
    Tensor out(dev, arrived.shape(), rows.dtype());
    kernels::convert(arrived, out);
    return out;
  }
  return dispatcher_.dispatch(dispatch_, rows);
}

Tensor MoeLayer::backward(const Tensor& dy, double aux_scale) {
  Device& dev = dy.device();
  const std::int64_t n = dy.dim(0), d = config_.d_model;
  const std::int64_t kept = routed_by_->routing.kept();
  // Gate-weighted sum: d routed_out = gate * dy[token], d gate = <routed_out, dy[token]>.
  Tensor dy_copies(dev, {kept, d});
  kernels::gather_rows({.src = &dy, .index = &token_of_copy_, .dst = &dy_copies});
  Tensor dcopy_gates(dev, {kept});
  kernels::row_dot({.a = &routed_out_, .b = &dy_copies, .out = &dcopy_gates});
  routed_out_ = Tensor();
  const Tensor gates_flat = routed_by_->copy_gates.reshaped({kept});
  Tensor drouted_out(dev, {kept, d}, config_.compute_dtype);
  kernels::gather_rows({.src = &dy, .index = &token_of_copy_, .scale = &gates_flat, .dst = &drouted_out});
  dy_copies = Tensor();
  // Experts, along the same routes: gradients of outputs go to the ranks that computed them.
  Tensor dexpert_out = dispatcher_.dispatch(dispatch_, drouted_out);
  const auto expert_start = std::chrono::steady_clock::now();
  Tensor dexpert_in;
  {
    const trace::Scope span("experts", "experts backward", layer_);
    dexpert_in = experts_->backward(dexpert_out);
    dev.synchronize();
  }
  stats_.expert_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - expert_start).count();
  expert_out_ = Tensor();
  Tensor drouted = dispatcher_.combine(dispatch_, dexpert_in);
  Tensor dh = Tensor::zeros(dev, {n, d});
  kernels::scatter_add_rows({.src = &drouted, .index = &token_of_copy_, .dst = &dh});
  drouted = Tensor();
  dexpert_in = Tensor();
  expert_in_ = Tensor();
  routed_ = Tensor();
  if (shared_) {
    const Tensor dh_shared = shared_->backward(dy);
    kernels::binary({.op = BinaryOp::Add, .a = &dh, .b = &dh_shared, .out = &dh});
  }
  // Router: its weights, and its part of dh, from the gates' gradient and the balancing losses.
  router_->backward(dcopy_gates, aux_scale, dh);
  token_of_copy_ = Tensor();
  routed_by_ = nullptr;
  return dh;
}

}  // namespace moerun
