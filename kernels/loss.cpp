#include "kernels/loss.h"

#include "kernels/check.h"

namespace moerun::kernels {
using detail::check_f32;

namespace {
void check_common(std::string_view k, const CrossEntropyArgs& p) {
  detail::check_present(k, "probs", p.probs);
  detail::check_rank(k, "probs", *p.probs, 2);
  const std::int64_t n = p.probs->dim(0);
  check_f32(k, "probs", p.probs, p.probs->shape());
  detail::check_present(k, "labels", p.labels);
  detail::check_dtype(k, "labels", *p.labels, DType::I32);
  detail::check_shape(k, "labels", *p.labels, {n});
}
}  // namespace

void cross_entropy_forward(const CrossEntropyArgs& p) {
  constexpr std::string_view k = "cross_entropy_forward";
  const auto [table, device] = detail::table_for(k, {p.logits, p.labels, p.probs, p.loss});
  check_common(k, p);
  check_f32(k, "logits", p.logits, p.probs->shape());
  check_f32(k, "loss", p.loss, {2});
  const ScopedKernelTimer timer(device, "cross_entropy_forward");
  table.cross_entropy_forward(p);
}

void cross_entropy_backward(const CrossEntropyArgs& p) {
  constexpr std::string_view k = "cross_entropy_backward";
  const auto [table, device] = detail::table_for(k, {p.labels, p.probs, p.dlogits});
  check_common(k, p);
  check_f32(k, "dlogits", p.dlogits, p.probs->shape());
  const ScopedKernelTimer timer(device, "cross_entropy_backward");
  table.cross_entropy_backward(p);
}

}  // namespace moerun::kernels
