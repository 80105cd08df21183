#include "kernels/optimizer.h"

#include <cmath>

#include "kernels/check.h"
#include "kernels/elementwise.h"
#include "runtime/error.h"

namespace moerun::kernels {

void adamw_update(const AdamWArgs& p) {
  constexpr std::string_view k = "adamw_update";
  const auto [table, device] = detail::table_for(k, {p.param, p.grad, p.m, p.v});
  detail::check_present(k, "param", p.param);
  const Shape& s = p.param->shape();
  detail::check_f32(k, "param", p.param, s);
  detail::check_f32(k, "grad", p.grad, s);
  detail::check_f32(k, "m", p.m, s);
  detail::check_f32(k, "v", p.v, s);
  MOERUN_CHECK(p.step >= 1, KernelError, "[adamw_update] step must be >= 1 (bias correction), got {}", p.step);
  const ScopedKernelTimer timer(device, "adamw");
  table.adamw(p);
}

double global_norm(const std::vector<const Tensor*>& tensors) {
  double total = 0.0;
  for (const Tensor* t : tensors) total += read_sum_squares(*t);
  return std::sqrt(total);
}

void clip_by_norm(const std::vector<Tensor*>& grads, double norm, double max_norm) {
  if (max_norm <= 0.0 || !(norm > max_norm)) return;
  const float factor = static_cast<float>(max_norm / norm);
  for (Tensor* g : grads) scale(*g, factor);
}

}  // namespace moerun::kernels
