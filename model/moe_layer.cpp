#include "model/moe_layer.h"

#include "model/param_names.h"

#include <chrono>
#include <cmath>
#include <numeric>

#include "kernels/elementwise.h"
#include "kernels/index.h"
#include "kernels/matmul.h"
#include "kernels/router.h"
#include "runtime/error.h"
#include "runtime/trace.h"

namespace moerun {

MoeLayer::MoeLayer(ParameterStore& params, const ModelConfig& config, int layer, TokenDispatcher& dispatcher)
    : config_(config),
      layer_(layer),
      dispatcher_(dispatcher),
      router_(params.add(block_prefix(layer) + ".moe.router", {config.d_model, config.experts}, Init::Normal)),
      experts_(std::make_unique<FeedForwardSet>(params, config, expert_prefix(layer), dispatcher.local_experts(),
                                                ParamKind::Expert, layer)) {
  MOERUN_CHECK(dispatcher.num_experts() == config.experts, RuntimeError,
               "[moe layer {}] the dispatcher routes to {} experts but the model has {}", layer, dispatcher.num_experts(),
               config.experts);
  if (config.router_zipf > 0.0) {
    // log-popularity of Zipf(s): softmax(logits - s ln(e + 1)) favours expert e as 1 / (e + 1)^s.
    std::vector<float> bias(static_cast<std::size_t>(config.experts));
    for (std::int64_t e = 0; e < config.experts; ++e)
      bias[static_cast<std::size_t>(e)] = static_cast<float>(-config.router_zipf * std::log(double(e + 1)));
    router_bias_ = Tensor::from_host(params.device(), {config.experts}, bias);
  }
}

void MoeLayer::attach_local_experts(ParameterStore& params) {
  experts_ = std::make_unique<FeedForwardSet>(params, config_, expert_prefix(layer_), dispatcher_.local_experts(),
                                              ParamKind::Expert, layer_, /*create=*/false);
  experts_->set_recompute_hidden(recompute_experts_);
}

void MoeLayer::set_recompute_experts(bool on) {
  recompute_experts_ = on;
  experts_->set_recompute_hidden(on);
}

void MoeLayer::release() {
  experts_->release();
  for (Tensor* t : {&probs_, &lse_, &index_, &gates_, &token_of_copy_, &slot_of_copy_, &copy_gates_, &routed_, &expert_in_,
                    &expert_out_, &routed_out_})
    *t = Tensor();
  h_ = nullptr;
}

Tensor MoeLayer::forward(const Tensor& h) {
  Device& dev = h.device();
  const std::int64_t n = h.dim(0), d = config_.d_model, e = config_.experts, k = config_.top_k;
  h_ = &h;
  // 1. Router: logits, softmax, top-k, gates.
  Tensor logits(dev, {n, e});
  kernels::matmul({.a = &h, .b = &router_.value, .c = &logits});
  if (router_bias_.defined()) kernels::binary({.op = BinaryOp::Add, .a = &logits, .b = &router_bias_, .out = &logits});
  probs_ = Tensor(dev, {n, e});
  lse_ = Tensor(dev, {n});
  index_ = Tensor(dev, {n, k}, DType::I32);
  gates_ = Tensor(dev, {n, k});
  kernels::router_forward({.logits = &logits, .probs = &probs_, .lse = &lse_, .index = &index_, .gates = &gates_,
                           .renormalize = config_.renormalize_gates()});
  // 2. Capacity and sort by expert (host bookkeeping on the choices).
  const std::vector<std::int32_t> choices = index_.to_host_i32();
  routing_ = plan_routing(choices, n, k, e, config_.capacity(n));
  const std::int64_t kept = routing_.kept();
  token_of_copy_ = Tensor::from_host(dev, {kept}, routing_.token_of_copy);
  slot_of_copy_ = Tensor::from_host(dev, {kept}, routing_.slot_of_copy);
  copy_gates_ = Tensor(dev, {kept, 1});
  const Tensor gate_column = gates_.reshaped({n * k, 1});
  kernels::gather_rows({.src = &gate_column, .index = &slot_of_copy_, .dst = &copy_gates_});
  // 3. Dispatch token-copies to the experts' ranks, run the experts, combine.
  routed_ = Tensor(dev, {kept, d});
  kernels::gather_rows({.src = &h, .index = &token_of_copy_, .dst = &routed_});
  dispatch_ = dispatcher_.plan(routing_.kept_per_expert);
  expert_in_ = dispatcher_.dispatch(dispatch_, routed_);
  const auto expert_start = std::chrono::steady_clock::now();
  {
    const trace::Scope span("experts", "experts forward", layer_);
    expert_out_ = experts_->forward(expert_in_, dispatch_.recv_per_local_expert);
    dev.synchronize();
  }
  stats_.expert_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - expert_start).count();
  routed_out_ = dispatcher_.combine(dispatch_, expert_out_);
  // 4. Gate-weighted sum back onto the tokens.
  Tensor y = Tensor::zeros(dev, {n, d});
  const Tensor gates_flat = copy_gates_.reshaped({kept});
  kernels::scatter_add_rows({.src = &routed_out_, .index = &token_of_copy_, .scale = &gates_flat, .dst = &y});
  // 5. Auxiliary losses. aux = c * E * sum_e f_e P_e with f_e the fraction of token-copies
  //    routed to e and P_e the mean router probability; z = c * mean(lse^2).
  Tensor prob_sum(dev, {e});
  kernels::sum_rows({.x = &probs_, .out = &prob_sum});
  const std::vector<float> p_sum = prob_sum.to_host();
  stats_.assigned_per_expert = routing_.assigned_per_expert;
  stats_.kept_per_expert = routing_.kept_per_expert;
  stats_.copies = n * k;
  stats_.dropped = routing_.dropped;
  double aux = 0.0;
  for (std::int64_t i = 0; i < e; ++i) {
    const double f = static_cast<double>(routing_.assigned_per_expert[static_cast<std::size_t>(i)]) / double(n * k);
    aux += f * p_sum[static_cast<std::size_t>(i)] / double(n);
  }
  stats_.aux_loss = n > 0 ? config_.aux_loss_coef * double(e) * aux : 0.0;
  stats_.z_loss = n > 0 ? config_.z_loss_coef * kernels::sum_squares(lse_) / double(n) : 0.0;
  return y;
}

Tensor MoeLayer::backward(const Tensor& dy, double aux_scale) {
  Device& dev = dy.device();
  const std::int64_t n = dy.dim(0), d = config_.d_model, e = config_.experts, k = config_.top_k;
  const std::int64_t kept = routing_.kept();
  // Gate-weighted sum: d routed_out = gate * dy[token], d gate = <routed_out, dy[token]>.
  Tensor dy_copies(dev, {kept, d});
  kernels::gather_rows({.src = &dy, .index = &token_of_copy_, .dst = &dy_copies});
  Tensor dcopy_gates(dev, {kept});
  kernels::row_dot({.a = &routed_out_, .b = &dy_copies, .out = &dcopy_gates});
  routed_out_ = Tensor();
  const Tensor gates_flat = copy_gates_.reshaped({kept});
  Tensor drouted_out(dev, {kept, d});
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
  // Router: gradients of the kept gates (dropped copies get none), aux and z terms.
  Tensor dgates = Tensor::zeros(dev, {n * k, 1});
  const Tensor dcopy_column = dcopy_gates.reshaped({kept, 1});
  kernels::scatter_add_rows({.src = &dcopy_column, .index = &slot_of_copy_, .dst = &dgates});
  std::vector<float> aux_weight(static_cast<std::size_t>(e), 0.0f);
  if (n > 0) {
    for (std::int64_t i = 0; i < e; ++i) {
      const double f = static_cast<double>(routing_.assigned_per_expert[static_cast<std::size_t>(i)]) / double(n * k);
      aux_weight[static_cast<std::size_t>(i)] =
          static_cast<float>(aux_scale * config_.aux_loss_coef * double(e) * f / double(n));
    }
  }
  Tensor aux_t = Tensor::from_host(dev, {e}, aux_weight);
  Tensor dlogits(dev, {n, e});
  Tensor dgates_nk = dgates.reshaped({n, k});
  kernels::router_backward({.probs = &probs_, .lse = &lse_, .index = &index_, .gates = &gates_,
                            .renormalize = config_.renormalize_gates(), .dgates = &dgates_nk, .aux_weight = &aux_t,
                            .z_scale = n > 0 ? static_cast<float>(aux_scale * 2.0 * config_.z_loss_coef / double(n)) : 0.0f,
                            .dlogits = &dlogits});
  kernels::matmul({.a = &dlogits, .b = &router_.value, .c = &dh, .transpose_b = true, .accumulate = true});
  kernels::matmul({.a = h_, .b = &dlogits, .c = &router_.grad, .transpose_a = true, .accumulate = true});
  for (Tensor* t : {&probs_, &lse_, &index_, &gates_, &copy_gates_, &token_of_copy_, &slot_of_copy_}) *t = Tensor();
  h_ = nullptr;
  return dh;
}

}  // namespace moerun
