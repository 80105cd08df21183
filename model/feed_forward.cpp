#include "model/feed_forward.h"

#include <numeric>

#include "kernels/activation.h"
#include "kernels/matmul.h"
#include "runtime/error.h"

namespace moerun {

std::vector<std::string> FeedForwardSet::weight_names(const ModelConfig& config, const std::string& prefix, int id) {
  const std::string base = id >= 0 ? prefix + "." + std::to_string(id) : prefix;
  if (config.expert_type == ExpertType::SwiGlu) return {base + ".w1", base + ".w3", base + ".w2"};
  return {base + ".w1", base + ".w2"};
}

Shape FeedForwardSet::weight_shape(const ModelConfig& config, const std::string& name, std::int64_t d_ff) {
  const std::int64_t ff = d_ff > 0 ? d_ff : config.d_ff;
  return name.ends_with(".w2") ? Shape{ff, config.d_model} : Shape{config.d_model, ff};
}

FeedForwardSet::FeedForwardSet(ParameterStore& params, const ModelConfig& config, const std::string& prefix,
                               const std::vector<int>& expert_ids, ParamKind kind, int layer, bool create,
                               std::int64_t d_ff)
    : config_(config), d_ff_(d_ff > 0 ? d_ff : config.d_ff) {
  const bool swiglu = config.expert_type == ExpertType::SwiGlu;
  for (int id : expert_ids) {
    const int expert = kind == ParamKind::Expert ? id : -1;
    const auto names = weight_names(config, prefix, expert);
    auto param = [&](const std::string& name, Shape shape) {
      return create ? &params.add(name, std::move(shape), Init::Normal, kind, layer, expert) : &params.get(name);
    };
    Weights w{};
    w.w1 = param(names[0], weight_shape(config, names[0], d_ff_));
    if (swiglu) w.w3 = param(names[1], weight_shape(config, names[1], d_ff_));
    w.w2 = param(names.back(), weight_shape(config, names.back(), d_ff_));
    experts_.push_back(w);
  }
}

std::vector<Tensor> FeedForwardSet::split(const Tensor& t) const {
  std::vector<Tensor> parts;
  if (labels_ != nullptr) {
    parts.push_back(t.view());
    return parts;
  }
  std::int64_t row = 0;
  for (std::int64_t c : counts_) {
    parts.push_back(t.rows(row, row + c));
    row += c;
  }
  return parts;
}

void FeedForwardSet::apply_weights(const std::vector<Tensor>& a, Parameter* Weights::*w, std::vector<Tensor>& out,
                                   bool transpose_w, bool accumulate) {
  if (labels_ != nullptr) {
    if (experts_.empty()) return;  // every place unused: out stays zero
    BlockMatmulArgs args{.labels = labels_, .block = block_, .x = &a[0], .transpose_weights = transpose_w,
                         .out = &out[0], .accumulate = accumulate};
    for (const Weights& e : experts_) args.weights.push_back(&(e.*w)->compute());
    kernels::block_matmul(args);
    return;
  }
  GroupedMatmulArgs args;
  for (std::size_t i = 0; i < experts_.size(); ++i)
    args.groups.push_back({.a = &a[i], .b = &(experts_[i].*w)->compute(), .c = &out[i], .transpose_b = transpose_w,
                           .accumulate = accumulate});
  kernels::grouped_matmul(args);
}

void FeedForwardSet::accumulate_weight_grad(const std::vector<Tensor>& a, const std::vector<Tensor>& b,
                                            Parameter* Weights::*w) {
  if (labels_ != nullptr) {
    if (experts_.empty()) return;
    BlockMatmulArgs args{.labels = labels_, .block = block_, .x = &a[0], .dy = &b[0]};
    for (const Weights& e : experts_) args.grads.push_back(&(e.*w)->grad);
    kernels::block_weight_grad(args);
    return;
  }
  GroupedMatmulArgs args;
  for (std::size_t i = 0; i < experts_.size(); ++i)
    args.groups.push_back({.a = &a[i], .b = &b[i], .c = &(experts_[i].*w)->grad, .transpose_a = true, .accumulate = true});
  kernels::grouped_matmul(args);
}

Tensor FeedForwardSet::rows_buffer(Device& dev, std::int64_t rows, std::int64_t cols, DType dtype) const {
  // Rows past the experts' are padding: zeros in, zeros out (the matmuls never write them).
  return padded_ ? Tensor::zeros(dev, {rows, cols}, dtype) : Tensor(dev, {rows, cols}, dtype);
}

void FeedForwardSet::compute_hidden(const std::vector<Tensor>& xs) {
  Device& dev = x_->device();
  const std::int64_t rows = x_->dim(0), ff = d_ff_;
  pre_ = rows_buffer(dev, rows, ff, x_->dtype());
  auto pres = split(pre_);
  apply_weights(xs, &Weights::w1, pres, false, false);
  if (config_.expert_type == ExpertType::SwiGlu) {
    up_ = rows_buffer(dev, rows, ff, x_->dtype());
    auto ups = split(up_);
    apply_weights(xs, &Weights::w3, ups, false, false);
  }
}

void FeedForwardSet::release() {
  pre_ = Tensor();
  up_ = Tensor();
  x_ = nullptr;
}

Tensor FeedForwardSet::forward(const Tensor& x, std::span<const std::int64_t> counts) {
  MOERUN_CHECK(counts.size() == experts_.size(), RuntimeError, "[feed_forward] {} row counts for {} FFNs",
               counts.size(), experts_.size());
  counts_.assign(counts.begin(), counts.end());
  labels_ = nullptr;
  const std::int64_t counted = std::accumulate(counts_.begin(), counts_.end(), std::int64_t{0});
  MOERUN_CHECK(counted <= x.dim(0), RuntimeError, "[feed_forward] row counts add up to {} but x has {} rows", counted,
               x.dim(0));
  padded_ = counted < x.dim(0);
  return run_forward(x);
}

Tensor FeedForwardSet::forward_blocks(const Tensor& x, const Tensor& labels, std::int64_t block) {
  counts_.clear();
  labels_ = &labels;
  block_ = block;
  padded_ = experts_.empty();  // otherwise block_matmul zeroes the unused places itself
  return run_forward(x);
}

Tensor FeedForwardSet::run_forward(const Tensor& x) {
  Device& dev = x.device();
  x_ = &x;
  const std::int64_t rows = x.dim(0), ff = d_ff_;
  compute_hidden(split(x));
  Tensor act(dev, {rows, ff}, x.dtype());
  if (config_.expert_type == ExpertType::SwiGlu) {
    kernels::swiglu_forward({.gate = &pre_, .up = &up_, .y = &act});
  } else {
    kernels::activation_forward({.activation = Activation::Gelu, .x = &pre_, .out = &act});
  }
  if (recompute_hidden_) {  // the activation is all the second matmul needs
    pre_ = Tensor();
    up_ = Tensor();
  }
  Tensor out = rows_buffer(dev, rows, config_.d_model, x.dtype());
  auto acts = split(act);
  auto outs = split(out);
  apply_weights(acts, &Weights::w2, outs, false, false);
  return out;
}

Tensor FeedForwardSet::backward(const Tensor& dy) {
  Device& dev = dy.device();
  const std::int64_t rows = dy.dim(0), ff = d_ff_;
  const bool swiglu = config_.expert_type == ExpertType::SwiGlu;
  const DType act_dtype = x_->dtype();  // every activation and its gradient: the input's dtype
  const auto xs = split(*x_);
  if (!pre_.defined()) compute_hidden(xs);  // train.recompute = moe dropped them
  // Recompute the activation from the saved pre-activations (cheaper than keeping it).
  Tensor act(dev, {rows, ff}, act_dtype);
  if (swiglu) {
    kernels::swiglu_forward({.gate = &pre_, .up = &up_, .y = &act});
  } else {
    kernels::activation_forward({.activation = Activation::Gelu, .x = &pre_, .out = &act});
  }
  const auto dys = split(dy), acts = split(act);
  Tensor dact = rows_buffer(dev, rows, ff, act_dtype);
  auto dacts = split(dact);
  apply_weights(dys, &Weights::w2, dacts, true, false);  // dact = dy W2^T
  accumulate_weight_grad(acts, dys, &Weights::w2);       // dW2 += act^T dy
  act = Tensor();
  Tensor dx = rows_buffer(dev, rows, config_.d_model, act_dtype);
  auto dxs = split(dx);
  if (swiglu) {
    Tensor dgate(dev, {rows, ff}, act_dtype), dup(dev, {rows, ff}, act_dtype);
    kernels::swiglu_backward({.gate = &pre_, .up = &up_, .dy = &dact, .dgate = &dgate, .dup = &dup});
    const auto dgates = split(dgate), dups = split(dup);
    accumulate_weight_grad(xs, dgates, &Weights::w1);
    accumulate_weight_grad(xs, dups, &Weights::w3);
    apply_weights(dgates, &Weights::w1, dxs, true, false);  // dx = dgate W1^T + dup W3^T
    apply_weights(dups, &Weights::w3, dxs, true, true);
  } else {
    kernels::activation_backward({.activation = Activation::Gelu, .x = &pre_, .dy = &dact, .out = &dact});
    accumulate_weight_grad(xs, dacts, &Weights::w1);      // dW1 += x^T dpre
    apply_weights(dacts, &Weights::w1, dxs, true, false);  // dx = dpre W1^T
  }
  pre_ = Tensor();
  up_ = Tensor();
  x_ = nullptr;
  return dx;
}

}  // namespace moerun
