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

  const RouterOutput& forward(const Tensor& h) override {
    Device& dev = h.device();
    const std::int64_t n = h.dim(0), e = config_.experts, k = config_.top_k;
    h_ = &h;
    Tensor logits(dev, {n, e});
    const Tensor h32 = fp32(h);
    kernels::matmul({.a = &h32, .b = &weights_.value, .c = &logits});
    if (bias_.defined()) kernels::binary({.op = BinaryOp::Add, .a = &logits, .b = &bias_, .out = &logits});
    probs_ = Tensor(dev, {n, e});
    lse_ = Tensor(dev, {n});
    index_ = Tensor(dev, {n, k}, DType::I32);
    gates_ = Tensor(dev, {n, k});
    kernels::router_forward({.logits = &logits, .probs = &probs_, .lse = &lse_, .index = &index_, .gates = &gates_,
                             .renormalize = config_.renormalize_gates(), .score = config_.router_score,
                             .select_bias = select_bias_ != nullptr ? &select_bias_->value : nullptr,
                             .forced_index = config_.router_balanced ? &balanced_index(dev, n) : nullptr});
    // Capacity and sort by expert (host bookkeeping on the choices).
    const std::vector<std::int32_t> choices = index_.to_host_i32();
    out_.routing = plan_routing(choices, n, k, e, config_.capacity(n));
    out_.gates = gates_.reshaped({n * k, 1});
    out_.aux_loss = balance_loss(choices, n);
    out_.z_loss = n > 0 ? config_.z_loss_coef * kernels::sum_squares(lse_) / double(n) : 0.0;
    return out_;
  }

  void backward(const Tensor& dgates, double aux_scale, Tensor& dh) override {
    Device& dev = dh.device();
    const std::int64_t n = dh.dim(0), k = config_.top_k;
    // The gates' gradients (dropped copies have none), then the balancing and z terms.
    // d aux / d P_{g,e} summed over a group's tokens: c E f_{g,e} / (tokens per group) / groups = c E f_{g,e} / n.
    std::vector<float> aux_weight(balance_fractions_.size(), 0.0f);
    for (std::size_t i = 0; i < aux_weight.size() && n > 0; ++i)
      aux_weight[i] = static_cast<float>(aux_scale * config_.balance_loss_coef() * double(config_.experts) *
                                         balance_fractions_[i] / double(n));
    const std::int64_t groups = static_cast<std::int64_t>(balance_fractions_.size()) / config_.experts;
    Tensor aux_t = Tensor::from_host(dev, {groups, config_.experts}, aux_weight);
    Tensor dlogits(dev, {n, config_.experts});
    Tensor dgates_nk = dgates.reshaped({n, k});
    kernels::router_backward({.probs = &probs_, .lse = &lse_, .index = &index_, .gates = &gates_,
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
    std::vector<float> bias = select_bias_->value.to_host();
    for (std::size_t i = 0; i < bias.size(); ++i) {
      const double gap = mean - double(routed_per_expert[i]);
      bias[i] += static_cast<float>(config_.balance_rate * double((gap > 0.0) - (gap < 0.0)));
    }
    select_bias_->value = Tensor::from_host(select_bias_->value.device(), select_bias_->value.shape(), bias);
  }

  void release() override {
    for (Tensor* t : {&probs_, &lse_, &index_, &gates_, &out_.gates}) *t = Tensor();
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

  // The balancing loss (coefficient included) of this micro-batch, keeping for backward f_{g,e}:
  // the fraction of group g's token-copies routed to e (before capacity), per group of tokens
  // (the micro-batch, or each sequence).
  double balance_loss(const std::vector<std::int32_t>& choices, std::int64_t n) {
    const std::int64_t e = config_.experts, k = config_.top_k;
    // Per sequence only where the rows are whole sequences (not in one-token decoding).
    const bool per_sequence = config_.balance_per_sequence() && n > 0 && n % config_.seq_len == 0;
    const std::int64_t groups = per_sequence ? n / config_.seq_len : 1;
    const std::int64_t tokens = n / groups;
    balance_fractions_.assign(static_cast<std::size_t>(groups * e), 0.0);
    if (n == 0 || config_.balance_loss_coef() == 0.0) return 0.0;
    for (std::int64_t i = 0; i < n * k; ++i)
      balance_fractions_[static_cast<std::size_t>((i / k / tokens) * e + choices[static_cast<std::size_t>(i)])] += 1.0;
    for (double& f : balance_fractions_) f /= double(tokens * k);  // counts to fractions
    double aux = 0.0;
    Tensor prob_sum(probs_.device(), {e});
    for (std::int64_t g = 0; g < groups; ++g) {
      const Tensor group = probs_.rows(g * tokens, (g + 1) * tokens);
      kernels::sum_rows({.x = &group, .out = &prob_sum});
      const std::vector<float> p_sum = prob_sum.to_host();
      for (std::int64_t i = 0; i < e; ++i)
        aux += balance_fractions_[static_cast<std::size_t>(g * e + i)] * p_sum[static_cast<std::size_t>(i)] / double(tokens);
    }
    return config_.balance_loss_coef() * double(e) * aux / double(groups);
  }

  const ModelConfig& config_;
  Parameter& weights_;  // [d, experts]
  Tensor bias_;         // [experts]: bench.router_zipf's fixed logit bias (empty when off)
  Tensor balanced_index_;  // i32 [n, k]: bench.router_balanced's forced choice (empty when off)
  Buffer* select_bias_ = nullptr;  // [experts]: aux_free's selection bias (null otherwise)
  RouterOutput out_;
  // Saved by forward for backward.
  const Tensor* h_ = nullptr;
  Tensor probs_, lse_, index_, gates_;  // router outputs, [n, e], [n], i32 [n, k], [n, k]
  std::vector<double> balance_fractions_;  // [groups * e]: f_{g,e}
};

}  // namespace

std::unique_ptr<Router> make_softmax_top_k_router(ParameterStore& params, const ModelConfig& config, int layer) {
  return std::make_unique<SoftmaxTopKRouter>(params, config, layer);
}

}  // namespace moerun
