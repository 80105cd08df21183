#include "model/lm_loss.h"

#include "kernels/loss.h"
#include "runtime/vocab.h"

namespace moerun {

namespace {
MicroBatchLoss run(Transformer& model, const Tensor& tokens, const Tensor& targets, std::int64_t batch,
                   const LossScales* scales) {
  Tensor logits = model.forward(tokens, batch);
  Tensor probs(logits.device(), logits.shape());
  CrossEntropyArgs ce{.logits = &logits, .labels = &targets, .ignore_label = vocab::kIgnore, .probs = &probs};
  const CrossEntropyResult r = kernels::cross_entropy_forward(ce);
  MicroBatchLoss loss{r.loss_sum, r.count, 0.0, 0.0};
  for (const MoeStats* s : model.moe_stats()) {
    loss.aux += s->aux_loss;
    loss.z += s->z_loss;
  }
  if (scales != nullptr) {
    ce.scale = static_cast<float>(scales->ce_scale);
    ce.dlogits = &logits;  // the logits are no longer needed: reuse their memory
    kernels::cross_entropy_backward(ce);
    probs = Tensor();
    model.backward(logits, scales->aux_scale);
  }
  return loss;
}
}  // namespace

MicroBatchLoss forward_backward(Transformer& model, const Tensor& tokens, const Tensor& targets, std::int64_t batch,
                                const LossScales& scales) {
  return run(model, tokens, targets, batch, &scales);
}

MicroBatchLoss forward_loss(Transformer& model, const Tensor& tokens, const Tensor& targets, std::int64_t batch) {
  return run(model, tokens, targets, batch, nullptr);
}

}  // namespace moerun
