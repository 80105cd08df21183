#include "runtime/train/optimizer.h"

#include <cmath>
#include <numbers>

#include "kernels/optimizer.h"

namespace moerun {

double learning_rate(const TrainConfig& train, std::int64_t step) {
  if (train.warmup_steps > 0 && step <= train.warmup_steps) return train.lr * double(step) / double(train.warmup_steps);
  const std::int64_t decay_steps = std::max<std::int64_t>(1, train.steps - train.warmup_steps);
  const double progress = std::min(1.0, double(step - train.warmup_steps) / double(decay_steps));
  const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  return train.lr * (train.min_lr_ratio + (1.0 - train.min_lr_ratio) * cosine);
}

AdamW::AdamW(const TrainConfig& train, ParameterStore& params) : train_(train), params_(params) {
  for (Parameter* p : params.all()) {
    moments_.emplace(p->name,
                     Moments{Tensor::zeros(params.device(), p->value.shape()), Tensor::zeros(params.device(), p->value.shape())});
  }
}

AdamW::Moments& AdamW::add_moments(const std::string& name, const Shape& shape) {
  return moments_.insert_or_assign(name, Moments{Tensor::zeros(params_.device(), shape), Tensor::zeros(params_.device(), shape)})
      .first->second;
}

void AdamW::step(std::int64_t step, double lr) {
  for (Parameter* p : params_.all()) {
    Moments& mo = moments_.at(p->name);
    kernels::adamw_update({.param = &p->value, .grad = &p->grad, .m = &mo.m, .v = &mo.v, .lr = static_cast<float>(lr),
                           .beta1 = static_cast<float>(train_.beta1), .beta2 = static_cast<float>(train_.beta2),
                           .epsilon = static_cast<float>(train_.epsilon),
                           .weight_decay = p->decay ? static_cast<float>(train_.weight_decay) : 0.0f, .step = step});
  }
}

}  // namespace moerun
