#include "kernels/topk.h"

#include "kernels/check.h"
#include "runtime/error.h"

namespace moerun::kernels {

void top_k(const TopKArgs& p) {
  constexpr std::string_view k = "top_k";
  const auto [table, device] = detail::table_for(k, {p.x, p.values, p.indices});
  detail::check_present(k, "x", p.x);
  detail::check_rank(k, "x", *p.x, 2);
  detail::check_present(k, "values", p.values);
  detail::check_rank(k, "values", *p.values, 2);
  const std::int64_t n = p.x->dim(0), m = p.x->dim(1), kk = p.values->dim(1);
  MOERUN_CHECK(kk >= 1 && kk <= m, KernelError, "[top_k] k = {} must be in [1, {}] for x {}", kk, m,
               shape_string(p.x->shape()));
  detail::check_f32(k, "x", p.x, {n, m});
  detail::check_f32(k, "values", p.values, {n, kk});
  detail::check_present(k, "indices", p.indices);
  detail::check_dtype(k, "indices", *p.indices, DType::I32);
  detail::check_shape(k, "indices", *p.indices, {n, kk});
  const ScopedKernelTimer timer(device, "top_k");
  table.top_k(p);
}

}  // namespace moerun::kernels
