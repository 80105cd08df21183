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
  detail::check_float(k, {n, d}, {{"x", p.x}, {"y", p.y}});
  check_f32(k, {d}, {{"gamma", p.gamma}, {"beta", p.beta}});
  check_f32(k, {n}, {{"mean", p.mean}, {"variance", p.variance}});
  const ScopedKernelTimer timer(device, k);
  table.layer_norm_forward(p);
}

void layer_norm_backward(const LayerNormArgs& p) {
  constexpr std::string_view k = "layer_norm_backward";
  const auto [table, device] = detail::table_for(k, {p.x, p.gamma, p.beta, p.mean, p.variance, p.dy, p.dx, p.dgamma, p.dbeta});
  auto [n, d] = rows_cols(k, p.x);
  detail::check_float(k, {n, d}, {{"x", p.x}, {"dy", p.dy}, {"dx", p.dx}});
  check_f32(k, {d}, {{"gamma", p.gamma}, {"dgamma", p.dgamma}, {"dbeta", p.dbeta}});
  check_f32(k, {n}, {{"mean", p.mean}, {"variance", p.variance}});
  const ScopedKernelTimer timer(device, k);
  table.layer_norm_backward(p);
}

void rms_norm_forward(const RmsNormArgs& p) {
  constexpr std::string_view k = "rms_norm_forward";
  const auto [table, device] = detail::table_for(k, {p.x, p.gamma, p.rstd, p.y});
  auto [n, d] = rows_cols(k, p.x);
  detail::check_float(k, {n, d}, {{"x", p.x}, {"y", p.y}});
  check_f32(k, "gamma", p.gamma, {d});
  check_f32(k, "rstd", p.rstd, {n});
  const ScopedKernelTimer timer(device, k);
  table.rms_norm_forward(p);
}

void rms_norm_backward(const RmsNormArgs& p) {
  constexpr std::string_view k = "rms_norm_backward";
  const auto [table, device] = detail::table_for(k, {p.x, p.gamma, p.rstd, p.dy, p.dx, p.dgamma});
  auto [n, d] = rows_cols(k, p.x);
  detail::check_float(k, {n, d}, {{"x", p.x}, {"dy", p.dy}, {"dx", p.dx}});
  check_f32(k, {d}, {{"gamma", p.gamma}, {"dgamma", p.dgamma}});
  check_f32(k, "rstd", p.rstd, {n});
  const ScopedKernelTimer timer(device, k);
  table.rms_norm_backward(p);
}

}  // namespace moerun::kernels
