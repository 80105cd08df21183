#include "model/attention_layer.h"

#include "kernels/attention.h"
#include "kernels/matmul.h"

namespace moerun {

AttentionLayer::AttentionLayer(ParameterStore& params, const ModelConfig& config, const std::string& name)
    : config_(config),
      w_qkv_(params.add(name + ".w_qkv", {config.d_model, 3 * config.d_model}, Init::Normal)),
      w_out_(params.add(name + ".w_out", {config.d_model, config.d_model}, Init::Normal)),
      b_out_(params.add(name + ".b_out", {config.d_model}, Init::Zeros)) {}

RopeArgs AttentionLayer::rope_args(Tensor& qkv, bool inverse) const {
  return {.qkv = &qkv, .seq = config_.seq_len, .heads = config_.n_heads, .theta = static_cast<float>(config_.rope_theta),
          .inverse = inverse};
}

Tensor AttentionLayer::forward(const Tensor& h, std::int64_t batch) {
  Device& dev = h.device();
  const std::int64_t n = h.dim(0), d = config_.d_model, t = config_.seq_len, heads = config_.n_heads;
  h_ = &h;
  batch_ = batch;
  const DType act = config_.compute_dtype;
  qkv_ = Tensor(dev, {n, 3 * d}, act);
  kernels::matmul({.a = &h, .b = &w_qkv_.compute(), .c = &qkv_});
  if (config_.position == PositionKind::Rope) kernels::rope(rope_args(qkv_, false));
  probs_ = Tensor(dev, {batch, heads, t, t});
  heads_ = Tensor(dev, {n, d}, act);
  kernels::attention_forward({.batch = batch, .seq = t, .heads = heads, .qkv = &qkv_, .probs = &probs_, .out = &heads_});
  Tensor y(dev, {n, d});  // fp32: added to the residual stream
  kernels::matmul({.a = &heads_, .b = &w_out_.compute(), .bias = &b_out_.value, .c = &y});
  return y;
}

Tensor AttentionLayer::backward(const Tensor& dy) {
  Device& dev = dy.device();
  const std::int64_t n = dy.dim(0), d = config_.d_model;
  const DType act = config_.compute_dtype;
  Tensor dheads(dev, {n, d}, act);
  kernels::linear_backward(heads_, w_out_.compute(), dy,
                           {.da = &dheads, .dw = &w_out_.grad, .dbias = &b_out_.grad, .accumulate = true});
  heads_ = Tensor();
  Tensor dqkv(dev, {n, 3 * d}, act);
  kernels::attention_backward({.batch = batch_, .seq = config_.seq_len, .heads = config_.n_heads, .qkv = &qkv_,
                               .probs = &probs_, .dout = &dheads, .dqkv = &dqkv});
  probs_ = Tensor();
  qkv_ = Tensor();
  if (config_.position == PositionKind::Rope) kernels::rope(rope_args(dqkv, true));  // back through the rotation
  Tensor dh(dev, {n, d});  // fp32, towards the residual stream
  kernels::linear_backward(*h_, w_qkv_.compute(), dqkv, {.da = &dh, .dw = &w_qkv_.grad, .accumulate = true});
  h_ = nullptr;
  return dh;
}

Tensor AttentionLayer::decode(const Tensor& h, Tensor& keys, Tensor& values, std::int64_t past) const {
  Device& dev = h.device();
  const std::int64_t n = h.dim(0), d = config_.d_model;
  const DType act = config_.compute_dtype;
  Tensor qkv(dev, {n, 3 * d}, act);
  kernels::matmul({.a = &h, .b = &w_qkv_.compute(), .c = &qkv});
  if (config_.position == PositionKind::Rope) {
    RopeArgs args = rope_args(qkv, false);
    args.seq = n;
    args.first_position = past;
    kernels::rope(args);
  }
  Tensor heads(dev, {n, d}, act);
  kernels::attention_cached(
      {.qkv = &qkv, .keys = &keys, .values = &values, .past = past, .heads = config_.n_heads, .out = &heads});
  Tensor y(dev, {n, d});
  kernels::matmul({.a = &heads, .b = &w_out_.compute(), .bias = &b_out_.value, .c = &y});
  return y;
}

void AttentionLayer::release() {
  qkv_ = Tensor();
  probs_ = Tensor();
  heads_ = Tensor();
  h_ = nullptr;
}

}  // namespace moerun
