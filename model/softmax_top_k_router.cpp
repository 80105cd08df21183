// The top-k router (GShard, Switch, Mixtral, DeepSeek-V3). Scores from the logits h W_r
// (+ bench bias): a softmax over the experts, or a sigmoid per expert (model.router_score).
// Each token takes the k experts with the highest scores (plus, under model.balance =
// aux_free, a selection-only bias), with their scores as gates (normalized over the k when
// k > 1), then capacity per source micro-batch. Balancing losses (model.balance):
//   aux_loss      aux = c E sum_e f_e P_e over the micro-batch (f_e: fraction of its copies
//                 routed to e, P_e: mean of e's probability; sigmoid: the scores over their sum)
//   seq_aux_loss  the same per sequence, averaged over the micro-batch's sequences
//   aux_free      bias_e += rate sign(mean count - count_e) once per step from the world's counts
//                 (a nonzero aux_loss_coef adds the sequence-wise loss)
// and the z-loss z = c mean(logsumexp^2) (softmax only). The scores, top-k and their
// gradient run as one fused kernel (kernels/router.h).
#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/index.h"
#include "kernels/matmul.h"
#include "kernels/router.h"
#include "kernels/routing.h"
#include "model/param_names.h"
#include "model/router.h"

namespace moerun {

namespace {

class SoftmaxTopKRouter final : public Router {
 public:
  SoftmaxTopKRouter(ParameterStore& params, const ModelConfig& config, int layer)
      : config_(config),
        weights_(params.add(block_prefix(layer) + ".moe.router", {config.d_model, config.experts}, Init::Normal)) {
    if (config.router_zipf > 0.0) {
      // log-popularity of Zipf(s): softmax(logits - s ln(e + 1)) favours expert e as 1 / (e + 1)^s.
      std::vector<float> bias(static_cast<std::size_t>(config.experts));
      for (std::int64_t e = 0; e < config.experts; ++e)
        bias[static_cast<std::size_t>(e)] = static_cast<float>(-config.router_zipf * std::log(double(e + 1)));
      bias_ = Tensor::from_host(params.device(), {config.experts}, bias);
    }
    if (config.balance == Balance::AuxFree)
      select_bias_ = &params.add_buffer(block_prefix(layer) + ".moe.router_bias", {config.experts});
  }

  const RouterOutput& forward(const Tensor& h, Tensor& losses) override {
    Device& dev = h.device();
    const std::int64_t n = h.dim(0), e = config_.experts, k = config_.top_k;
    h_ = &h;
    Tensor logits(dev, {n, e});
    const Tensor h32 = fp32(h);
    kernels::matmul({.a = &h32, .b = &weights_.value, .c = &logits});
    if (bias_.defined()) kernels::binary({.op = BinaryOp::Add, .a = &logits, .b = &bias_, .out = &logits});
    probs_ = Tensor(dev, {n, e});
    lse_ = Tensor(dev, {n});
    out_.index = Tensor(dev, {n, k}, DType::I32);
    gates_ = Tensor(dev, {n, k});
    kernels::router_forward({.logits = &logits, .probs = &probs_, .lse = &lse_, .index = &out_.index, .gates = &gates_,
                             .renormalize = config_.renormalize_gates(), .score = config_.router_score,
                             .select_bias = select_bias_ != nullptr ? &select_bias_->value : nullptr,
                             .forced_index = config_.router_balanced ? &balanced_index(dev, n) : nullptr});
    out_.gates = gates_.reshaped({n * k, 1});
    if (n == 0) return out_;
    Tensor aux = losses.rows(0, 1), z = losses.rows(1, 2);
    balance_loss(n, aux);
    // z = c mean(lse^2)
    kernels::sum_squares({.x = &lse_, .out = &z, .scale = static_cast<float>(config_.z_loss_coef / double(n)),
                          .accumulate = true});
    return out_;
  }

  void backward(const Tensor& dgates, double aux_scale, Tensor& dh) override {
    Device& dev = dh.device();
    const std::int64_t n = dh.dim(0), k = config_.top_k;
    // The gates' gradients (dropped copies have none), then the balancing and z terms.
    // d aux / d P_{g,e} summed over a group's tokens: c E f_{g,e} / (tokens per group) / groups = c E f_{g,e} / n,
    // with f_{g,e} = counts_{g,e} / (tokens per group x k).
    Tensor aux_t = std::move(group_counts_);
    if (!aux_t.defined()) aux_t = Tensor::zeros(dev, {1, config_.experts});
    const std::int64_t per_group = n / aux_t.dim(0);
    if (n > 0)
      kernels::scale(aux_t, static_cast<float>(aux_scale * config_.balance_loss_coef() * double(config_.experts) /
                                               double(n) / double(per_group * k)));
    Tensor dlogits(dev, {n, config_.experts});
    Tensor dgates_nk = dgates.reshaped({n, k});
    kernels::router_backward({.probs = &probs_, .lse = &lse_, .index = &out_.index, .gates = &gates_,
                              .renormalize = config_.renormalize_gates(), .score = config_.router_score,
                              .dgates = &dgates_nk, .aux_weight = &aux_t,
                              .z_scale = n > 0 ? static_cast<float>(aux_scale * 2.0 * config_.z_loss_coef / double(n)) : 0.0f,
                              .dlogits = &dlogits});
    kernels::matmul({.a = &dlogits, .b = &weights_.value, .c = &dh, .transpose_b = true, .accumulate = true});
    const Tensor h32 = fp32(*h_);
    kernels::matmul({.a = &h32, .b = &dlogits, .c = &weights_.grad, .transpose_a = true, .accumulate = true});
    release();
  }

  void after_step(const std::vector<std::int64_t>& routed_per_expert) override {
    if (select_bias_ == nullptr || config_.balance_rate == 0.0) return;
    double total = 0.0;
    for (const std::int64_t c : routed_per_expert) total += double(c);
    const double mean = total / double(routed_per_expert.size());
    std::vector<float> step(routed_per_expert.size());
    for (std::size_t i = 0; i < step.size(); ++i) {
      const double gap = mean - double(routed_per_expert[i]);
      step[i] = static_cast<float>(config_.balance_rate * double((gap > 0.0) - (gap < 0.0)));
    }
    // Uploaded and added on the device: the bias itself never travels to the host.
    const Tensor delta = Tensor::from_host(select_bias_->value.device(), select_bias_->value.shape(), step);
    kernels::axpy({.alpha = 1.0f, .x = &delta, .y = &select_bias_->value});
  }

  void release() override {
    for (Tensor* t : {&probs_, &lse_, &gates_, &group_counts_, &out_.index, &out_.gates}) *t = Tensor();
    h_ = nullptr;
  }

 private:
  // bench.router_balanced: copy c = i k + j of the micro-batch to expert c mod experts (distinct
  // within a token since k <= experts). Built once per token count.
  const Tensor& balanced_index(Device& dev, std::int64_t n) {
    if (!balanced_index_.defined() || balanced_index_.dim(0) != n) {
      std::vector<std::int32_t> index(static_cast<std::size_t>(n * config_.top_k));
      for (std::size_t c = 0; c < index.size(); ++c) index[c] = static_cast<std::int32_t>(c % std::size_t(config_.experts));
      balanced_index_ = Tensor::from_host(dev, {n, config_.top_k}, index);
    }
    return balanced_index_;
  }

  // The router computes in fp32 under mixed precision too (logits, softmax, top-k, gates,
  // losses): h is widened (exactly) and the fp32 master weights are read, not the bf16 copy.
  static Tensor fp32(const Tensor& h) {
    if (h.dtype() == DType::F32) return h.view();
    Tensor wide(h.device(), h.shape());
    kernels::convert(h, wide);
    return wide;
  }

  // Adds the balancing loss (coefficient included) of this micro-batch into aux [1], keeping
  // for backward the copies per (group, expert) before capacity: groups of tokens are the
  // micro-batch, or each sequence. aux = c E / groups sum_{g,e} f_{g,e} P_{g,e}, with f the
  // fraction of the group's copies routed to e and P the mean of e's probability over it.
  void balance_loss(std::int64_t n, Tensor& aux) {
    const std::int64_t e = config_.experts, k = config_.top_k;
    // Per sequence only where the rows are whole sequences (not in one-token decoding).
    const bool per_sequence = config_.balance_per_sequence() && n % config_.seq_len == 0;
    const std::int64_t groups = per_sequence ? n / config_.seq_len : 1;
    const std::int64_t tokens = n / groups;
    group_counts_ = Tensor(probs_.device(), {groups, e});
    if (config_.balance_loss_coef() == 0.0) {
      group_counts_.fill(0.0f);
      return;
    }
    kernels::expert_counts({.index = &out_.index, .groups = groups, .out = &group_counts_});
    Tensor prob_sums(probs_.device(), {groups, e});
    for (std::int64_t g = 0; g < groups; ++g) {
      const Tensor group = probs_.rows(g * tokens, (g + 1) * tokens);
      Tensor sums = prob_sums.rows(g, g + 1).reshaped({e});
      kernels::sum_rows({.x = &group, .out = &sums});
    }
    // sum_{g,e} counts_{g,e} x prob_sums_{g,e}, then the scale: f = counts / (tokens k), P = sums / tokens.
    const Tensor counts_row = group_counts_.reshaped({1, groups * e}), sums_row = prob_sums.reshaped({1, groups * e});
    Tensor dot(probs_.device(), {1});
    kernels::row_dot({.a = &counts_row, .b = &sums_row, .out = &dot});
    kernels::axpy({.alpha = static_cast<float>(config_.balance_loss_coef() * double(e) / double(groups) /
                                               double(tokens * k) / double(tokens)),
                   .x = &dot, .y = &aux});
  }

  const ModelConfig& config_;
  Parameter& weights_;  // [d, experts]
  Tensor bias_;         // [experts]: bench.router_zipf's fixed logit bias (empty when off)
  Tensor balanced_index_;  // i32 [n, k]: bench.router_balanced's forced choice (empty when off)
  Buffer* select_bias_ = nullptr;  // [experts]: aux_free's selection bias (null otherwise)
  RouterOutput out_;
  // Saved by forward for backward.
  const Tensor* h_ = nullptr;
  Tensor probs_, lse_, gates_;  // router outputs, [n, e], [n], [n, k] (the index is out_.index)
  Tensor group_counts_;         // [groups, e]: copies per (group of tokens, expert), before capacity
};

}  // namespace

std::unique_ptr<Router> make_softmax_top_k_router(ParameterStore& params, const ModelConfig& config, int layer) {
  return std::make_unique<SoftmaxTopKRouter>(params, config, layer);
}

}  // namespace moerun
