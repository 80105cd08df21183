#include "kernels/router.h"

#include "kernels/check.h"
#include "runtime/error.h"

namespace moerun::kernels {

namespace {
struct RouterDims {
  std::int64_t n, e, k;
};
RouterDims check_common(std::string_view kn, const RouterArgs& p) {
  detail::check_present(kn, "probs", p.probs);
  detail::check_rank(kn, "probs", *p.probs, 2);
  detail::check_present(kn, "index", p.index);
  detail::check_rank(kn, "index", *p.index, 2);
  const RouterDims d{p.probs->dim(0), p.probs->dim(1), p.index->dim(1)};
  MOERUN_CHECK(d.k >= 1 && d.k <= d.e, KernelError, "[{}] top_k = {} must be in [1, experts = {}]", kn, d.k, d.e);
  detail::check_f32(kn, "probs", p.probs, {d.n, d.e});
  detail::check_f32(kn, "lse", p.lse, {d.n});
  detail::check_dtype(kn, "index", *p.index, DType::I32);
  detail::check_shape(kn, "index", *p.index, {d.n, d.k});
  detail::check_f32(kn, "gates", p.gates, {d.n, d.k});
  return d;
}
}  // namespace

void router_forward(const RouterArgs& p) {
  const auto [table, device] = detail::table_for("router_forward", {p.logits, p.probs, p.lse, p.index, p.gates});
  const RouterDims d = check_common("router_forward", p);
  detail::check_f32("router_forward", "logits", p.logits, {d.n, d.e});
  if (p.select_bias != nullptr) detail::check_f32("router_forward", "select_bias", p.select_bias, {d.e});
  if (p.forced_index != nullptr) {
    detail::check_dtype("router_forward", "forced_index", *p.forced_index, DType::I32);
    detail::check_shape("router_forward", "forced_index", *p.forced_index, {d.n, d.k});
  }
  const ScopedKernelTimer timer(device, "router_forward");
  table.router_forward(p);
}

void router_backward(const RouterArgs& p) {
  const auto [table, device] =
      detail::table_for("router_backward", {p.probs, p.lse, p.index, p.gates, p.dgates, p.aux_weight, p.dlogits});
  const RouterDims d = check_common("router_backward", p);
  detail::check_f32("router_backward", "dgates", p.dgates, {d.n, d.k});
  detail::check_present("router_backward", "aux_weight", p.aux_weight);
  detail::check_rank("router_backward", "aux_weight", *p.aux_weight, 2);
  const std::int64_t groups = p.aux_weight->dim(0);
  MOERUN_CHECK(groups >= 1 && (d.n % groups == 0), KernelError,
               "[router_backward] aux_weight has {} rows, which must be >= 1 and divide the {} tokens", groups, d.n);
  detail::check_f32("router_backward", "aux_weight", p.aux_weight, {groups, d.e});
  MOERUN_CHECK(p.score == RouterScore::Softmax || p.z_scale == 0.0f, KernelError,
               "[router_backward] the z-loss is defined on softmax logits; a sigmoid router takes z_scale = 0, not {}",
               p.z_scale);
  detail::check_f32("router_backward", "dlogits", p.dlogits, {d.n, d.e});
  const ScopedKernelTimer timer(device, "router_backward");
  table.router_backward(p);
}

}  // namespace moerun::kernels
