#include "kernels/quantize.h"

#include "kernels/check.h"
#include "runtime/error.h"

namespace moerun::kernels {

std::int64_t fp8_row_bytes(std::int64_t d, std::int64_t block) { return d + 4 * (d / block); }

namespace {
// The rows' width d, checked against the block and the packed tensor's shape.
void check_packed(std::string_view k, const Tensor& rows, const Fp8RowsArgs& p) {
  detail::check_rank(k, "rows", rows, 2);
  const std::int64_t n = rows.dim(0), d = rows.dim(1);
  MOERUN_CHECK(p.block > 0 && d % p.block == 0, KernelError,
               "[{}] the scale block {} does not divide the row width {}", k, p.block, d);
  detail::check_present(k, "packed", p.packed);
  detail::check_dtype(k, "packed", *p.packed, DType::U8);
  detail::check_shape(k, "packed", *p.packed, {n, fp8_row_bytes(d, p.block)});
}
}  // namespace

void quantize_fp8(const Fp8RowsArgs& p) {
  constexpr std::string_view k = "quantize_fp8";
  const auto [table, device] = detail::table_for(k, {p.x, p.packed});
  detail::check_present(k, "x", p.x);
  detail::check_float(k, "x", p.x, p.x->shape());
  check_packed(k, *p.x, p);
  const ScopedKernelTimer timer(device, k);
  table.quantize_fp8(p);
}

void dequantize_fp8(const Fp8RowsArgs& p) {
  constexpr std::string_view k = "dequantize_fp8";
  const auto [table, device] = detail::table_for(k, {p.packed, p.y});
  detail::check_present(k, "y", p.y);
  detail::check_float(k, "y", p.y, p.y->shape());
  check_packed(k, *p.y, p);
  const ScopedKernelTimer timer(device, k);
  table.dequantize_fp8(p);
}

}  // namespace moerun::kernels
