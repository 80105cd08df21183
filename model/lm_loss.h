// One micro-batch through the model and the language-model loss: forward, cross-entropy on
// the targets (vocab::kIgnore excluded), the MoE auxiliary losses, and (optionally) backward.
// Used by the trainer, the evaluator and the gradient tests, so all three compute one loss.
//
// The losses are summed on the device, in the model's Readout, over the micro-batches since
// Transformer::reset_stats(); the host sees them after the readout's read() (once per step).
#pragma once

#include "model/transformer.h"

namespace moerun {

struct LossSums {
  double ce_sum = 0.0;       // cross-entropy summed over counted targets
  std::int64_t targets = 0;  // counted targets
  double aux = 0.0;          // MoE load-balancing loss, summed over layers and micro-batches (coefficient included)
  double z = 0.0;            // router z-loss, summed over layers and micro-batches (coefficient included)
};

// The loss of the whole step is sum(ce_sum) / global targets + mean over micro-batches of
// (aux + z). backward scales: ce_scale = 1 / global targets, aux_scale = 1 / global micro-batches.
struct LossScales {
  double ce_scale = 1.0;
  double aux_scale = 1.0;
};

// tokens, targets: i32 [batch * seq_len] on the model's device. Adds the micro-batch's losses
// to the readout and its gradients to the parameters.
void forward_backward(Transformer& model, const Tensor& tokens, const Tensor& targets, std::int64_t batch,
                      const LossScales& scales);
// The sums since reset_stats(), after the readout's read().
LossSums read_losses(const Transformer& model);
// One micro-batch's losses, without backward: resets, runs forward and reads (evaluation, tests).
LossSums forward_loss(Transformer& model, const Tensor& tokens, const Tensor& targets, std::int64_t batch);

}  // namespace moerun
