#include "model/lm_loss.h"

#include "kernels/loss.h"
#include "runtime/vocab.h"

namespace moerun {

namespace {
void run(Transformer& model, const Tensor& tokens, const Tensor& targets, std::int64_t batch, const LossScales* scales) {
  Tensor logits = model.forward(tokens, batch);
  Tensor probs(logits.device(), logits.shape());
  Tensor loss = model.readout().slots(model.loss_slot(), 2);
  CrossEntropyArgs ce{.logits = &logits, .labels = &targets, .ignore_label = vocab::kIgnore, .probs = &probs,
                      .loss = &loss, .accumulate = true};
  kernels::cross_entropy_forward(ce);
  if (scales == nullptr) return;
  ce.scale = static_cast<float>(scales->ce_scale);
  ce.dlogits = &logits;  // the logits are no longer needed: reuse their memory
  kernels::cross_entropy_backward(ce);
  probs = Tensor();
  model.backward(logits, scales->aux_scale);
}
}  // namespace

void forward_backward(Transformer& model, const Tensor& tokens, const Tensor& targets, std::int64_t batch,
                      const LossScales& scales) {
  run(model, tokens, targets, batch, &scales);
}

LossSums read_losses(const Transformer& model) {
  LossSums sums{.ce_sum = model.readout().value(model.loss_slot()),
                .targets = static_cast<std::int64_t>(model.readout().value(model.loss_slot() + 1))};
  for (const MoeStats& s : model.moe_stats()) {
    sums.aux += s.aux_loss;
    sums.z += s.z_loss;
  }
  return sums;
}

LossSums forward_loss(Transformer& model, const Tensor& tokens, const Tensor& targets, std::int64_t batch) {
  model.reset_stats();
  run(model, tokens, targets, batch, nullptr);
  model.readout().read();
  return read_losses(model);
}

}  // namespace moerun
