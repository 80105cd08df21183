#include "train/optimizer.h"

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

namespace {
Shape rows_shape(Shape shape, RowRange rows) {
  if (!shape.empty()) shape[0] = rows.rows();
  return shape;
}
}  // namespace

AdamW::AdamW(const TrainConfig& train, ParameterStore& params, const RowsOf& rows_of) : train_(train), params_(params) {
  for (Parameter* p : params.all()) {
    const RowRange rows = rows_of ? rows_of(*p) : RowRange{0, p->value.shape().empty() ? 1 : p->value.dim(0)};
    add_moments(p->name, p->value.shape(), rows);
  }
}

AdamW::Moments& AdamW::add_moments(const std::string& name, const Shape& shape, RowRange rows) {
  const Shape part = rows_shape(shape, rows);
  return moments_.insert_or_assign(name, Moments{Tensor::zeros(params_.device(), part), Tensor::zeros(params_.device(), part), rows})
      .first->second;
}

std::int64_t AdamW::state_elements() const {
  std::int64_t n = 0;
  for (const auto& [name, m] : moments_) n += m.m.numel() + m.v.numel();
  return n;
}

void AdamW::step(std::int64_t step, double lr) {
  for (Parameter* p : params_.all()) {
    Moments& mo = moments_.at(p->name);
    if (mo.rows.empty()) continue;
    const bool whole = p->value.shape().empty() || mo.rows.rows() == p->value.dim(0);
    Tensor value = whole ? p->value.view() : p->value.rows(mo.rows.begin, mo.rows.end);
    Tensor grad = whole ? p->grad.view() : p->grad.rows(mo.rows.begin, mo.rows.end);
    kernels::adamw_update({.param = &value, .grad = &grad, .m = &mo.m, .v = &mo.v, .lr = static_cast<float>(lr),
                           .beta1 = static_cast<float>(train_.beta1), .beta2 = static_cast<float>(train_.beta2),
                           .epsilon = static_cast<float>(train_.epsilon),
                           .weight_decay = p->decay ? static_cast<float>(train_.weight_decay) : 0.0f, .step = step});
  }
}

}  // namespace moerun
