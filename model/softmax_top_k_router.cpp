// The softmax top-k router (GShard, Switch): probabilities = softmax(h W_r (+ bench bias)),
// each token's k most probable experts with their probabilities as gates (renormalized over
// the k when k > 1), capacity per source micro-batch, the Switch load-balancing loss
// aux = c E sum_e f_e P_e (f_e: fraction of copies routed to e, P_e: mean probability of e)
// and the z-loss z = c mean(logsumexp^2). The softmax, top-k and their gradient run as one
// fused kernel (kernels/router.h).
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
                             .renormalize = config_.renormalize_gates()});
    // Capacity and sort by expert (host bookkeeping on the choices).
    out_.routing = plan_routing(index_.to_host_i32(), n, k, e, config_.capacity(n));
    const std::int64_t kept = out_.routing.kept();
    slot_of_copy_ = Tensor::from_host(dev, {kept}, out_.routing.slot_of_copy);
    out_.copy_gates = Tensor(dev, {kept, 1});
    const Tensor gate_column = gates_.reshaped({n * k, 1});
    kernels::gather_rows({.src = &gate_column, .index = &slot_of_copy_, .dst = &out_.copy_gates});
    Tensor prob_sum(dev, {e});
    kernels::sum_rows({.x = &probs_, .out = &prob_sum});
    const std::vector<float> p_sum = prob_sum.to_host();
    double aux = 0.0;
    for (std::int64_t i = 0; i < e; ++i) aux += routed_fraction(i, n) * p_sum[static_cast<std::size_t>(i)] / double(n);
    out_.aux_loss = n > 0 ? config_.aux_loss_coef * double(e) * aux : 0.0;
    out_.z_loss = n > 0 ? config_.z_loss_coef * kernels::sum_squares(lse_) / double(n) : 0.0;
    return out_;
  }

  void backward(const Tensor& dcopy_gates, double aux_scale, Tensor& dh) override {
    Device& dev = dh.device();
    const std::int64_t n = dh.dim(0), e = config_.experts, k = config_.top_k, kept = out_.routing.kept();
    // Gradients of the kept gates (dropped copies get none), then the aux and z terms.
    Tensor dgates = Tensor::zeros(dev, {n * k, 1});
    const Tensor dcopy_column = dcopy_gates.reshaped({kept, 1});
    kernels::scatter_add_rows({.src = &dcopy_column, .index = &slot_of_copy_, .dst = &dgates});
    std::vector<float> aux_weight(static_cast<std::size_t>(e), 0.0f);
    if (n > 0) {  // d aux / d P_e summed over tokens: c E f_e / n per token
      for (std::int64_t i = 0; i < e; ++i)
        aux_weight[static_cast<std::size_t>(i)] =
            static_cast<float>(aux_scale * config_.aux_loss_coef * double(e) * routed_fraction(i, n) / double(n));
    }
    Tensor aux_t = Tensor::from_host(dev, {e}, aux_weight);
    Tensor dlogits(dev, {n, e});
    Tensor dgates_nk = dgates.reshaped({n, k});
    kernels::router_backward({.probs = &probs_, .lse = &lse_, .index = &index_, .gates = &gates_,
                              .renormalize = config_.renormalize_gates(), .dgates = &dgates_nk, .aux_weight = &aux_t,
                              .z_scale = n > 0 ? static_cast<float>(aux_scale * 2.0 * config_.z_loss_coef / double(n)) : 0.0f,
                              .dlogits = &dlogits});
    kernels::matmul({.a = &dlogits, .b = &weights_.value, .c = &dh, .transpose_b = true, .accumulate = true});
    const Tensor h32 = fp32(*h_);
    kernels::matmul({.a = &h32, .b = &dlogits, .c = &weights_.grad, .transpose_a = true, .accumulate = true});
    release();
  }

  void release() override {
    for (Tensor* t : {&probs_, &lse_, &index_, &gates_, &slot_of_copy_, &out_.copy_gates}) *t = Tensor();
    h_ = nullptr;
  }

 private:
  // The router computes in fp32 under mixed precision too (logits, softmax, top-k, gates,
  // losses): h is widened (exactly) and the fp32 master weights are read, not the bf16 copy.
  static Tensor fp32(const Tensor& h) {
    if (h.dtype() == DType::F32) return h.view();
    Tensor wide(h.device(), h.shape());
    kernels::convert(h, wide);
    return wide;
  }
  // f_e: the fraction of this micro-batch's token-copies routed to expert e (before capacity).
  double routed_fraction(std::int64_t expert, std::int64_t tokens) const {
    return double(out_.routing.assigned_per_expert[static_cast<std::size_t>(expert)]) / double(tokens * config_.top_k);
  }

  const ModelConfig& config_;
  Parameter& weights_;  // [d, experts]
  Tensor bias_;         // [experts]: bench.router_zipf's fixed logit bias (empty when off)
  RouterOutput out_;
  // Saved by forward for backward.
  const Tensor* h_ = nullptr;
  Tensor probs_, lse_, index_, gates_;  // softmax outputs, [n, e], [n], i32 [n, k], [n, k]
  Tensor slot_of_copy_;                 // i32 [kept]: index into the [n * k] gates
};

}  // namespace

std::unique_ptr<Router> make_softmax_top_k_router(ParameterStore& params, const ModelConfig& config, int layer) {
  return std::make_unique<SoftmaxTopKRouter>(params, config, layer);
}

}  // namespace moerun
