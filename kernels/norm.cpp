#include "kernels/norm.h"

#include "kernels/check.h"

namespace moerun::kernels {
using detail::check_f32;
using detail::check_present;

namespace {
struct Dims {
  std::int64_t n, d;
};
Dims rows_cols(std::string_view kernel, const Tensor* x) {
  check_present(kernel, "x", x);
  detail::check_rank(kernel, "x", *x, 2);
  return {x->dim(0), x->dim(1)};
}
}  // namespace

void layer_norm_forward(const LayerNormArgs& p) {
  constexpr std::string_view k = "layer_norm_forward";
  const auto [table, device] = detail::table_for(k, {p.x, p.gamma, p.beta, p.mean, p.variance, p.y});
  auto [n, d] = rows_cols(k, p.x);
  check_f32(k, "x", p.x, {n, d});
  check_f32(k, "gamma", p.gamma, {d});
  check_f32(k, "beta", p.beta, {d});
  check_f32(k, "mean", p.mean, {n});
  check_f32(k, "variance", p.variance, {n});
  check_f32(k, "y", p.y, {n, d});
  const ScopedKernelTimer timer(device, "layer_norm_forward");
  table.layer_norm_forward(p);
}

void layer_norm_backward(const LayerNormArgs& p) {
  constexpr std::string_view k = "layer_norm_backward";
  const auto [table, device] = detail::table_for(k, {p.x, p.gamma, p.beta, p.mean, p.variance, p.dy, p.dx, p.dgamma, p.dbeta});
  auto [n, d] = rows_cols(k, p.x);
  check_f32(k, "x", p.x, {n, d});
  check_f32(k, "gamma", p.gamma, {d});
  check_f32(k, "mean", p.mean, {n});
  check_f32(k, "variance", p.variance, {n});
  check_f32(k, "dy", p.dy, {n, d});
  check_f32(k, "dx", p.dx, {n, d});
  check_f32(k, "dgamma", p.dgamma, {d});
  check_f32(k, "dbeta", p.dbeta, {d});
  const ScopedKernelTimer timer(device, "layer_norm_backward");
  table.layer_norm_backward(p);
}

void rms_norm_forward(const RmsNormArgs& p) {
  constexpr std::string_view k = "rms_norm_forward";
  const auto [table, device] = detail::table_for(k, {p.x, p.gamma, p.rstd, p.y});
  auto [n, d] = rows_cols(k, p.x);
  check_f32(k, "x", p.x, {n, d});
  check_f32(k, "gamma", p.gamma, {d});
  check_f32(k, "rstd", p.rstd, {n});
  check_f32(k, "y", p.y, {n, d});
  const ScopedKernelTimer timer(device, "rms_norm_forward");
  table.rms_norm_forward(p);
}

void rms_norm_backward(const RmsNormArgs& p) {
  constexpr std::string_view k = "rms_norm_backward";
  const auto [table, device] = detail::table_for(k, {p.x, p.gamma, p.rstd, p.dy, p.dx, p.dgamma});
  auto [n, d] = rows_cols(k, p.x);
  check_f32(k, "x", p.x, {n, d});
  check_f32(k, "gamma", p.gamma, {d});
  check_f32(k, "rstd", p.rstd, {n});
  check_f32(k, "dy", p.dy, {n, d});
  check_f32(k, "dx", p.dx, {n, d});
  check_f32(k, "dgamma", p.dgamma, {d});
  const ScopedKernelTimer timer(device, "rms_norm_backward");
  table.rms_norm_backward(p);
}

}  // namespace moerun::kernels
