#include "kernels/index.h"

#include "kernels/check.h"
#include "runtime/error.h"

namespace moerun::kernels {
using detail::check_f32;

namespace {
// rows_by_index: the tensor with one row per index entry (dst for gather, src for scatter).
void check_index_rows(std::string_view k, const IndexRowsArgs& p, const Tensor* rows_by_index, const Tensor* table_rows) {
  detail::check_present(k, "src", p.src);
  detail::check_present(k, "dst", p.dst);
  detail::check_present(k, "index", p.index);
  detail::check_rank(k, "src", *p.src, 2);
  detail::check_rank(k, "dst", *p.dst, 2);
  const std::int64_t n = rows_by_index->dim(0), d = rows_by_index->dim(1);
  detail::check_dtype(k, "index", *p.index, DType::I32);
  detail::check_shape(k, "index", *p.index, {n});
  // A plain gather copies rows of any one dtype (packed fp8 rows too); arithmetic needs floats.
  const bool row_copy = k == "gather_rows" && p.scale == nullptr && p.src->dtype() == p.dst->dtype();
  if (!row_copy) {
    detail::check_float(k, "src", p.src, p.src->shape());
    detail::check_float(k, "dst", p.dst, p.dst->shape());
  }
  MOERUN_CHECK(table_rows->dim(1) == d, KernelError, "[{}] src {} and dst {} must have the same row width", k,
               shape_string(p.src->shape()), shape_string(p.dst->shape()));
  if (p.scale != nullptr) check_f32(k, "scale", p.scale, {n});
}
}  // namespace

void gather_rows(const IndexRowsArgs& p) {
  const auto [table, device] = detail::table_for("gather_rows", {p.src, p.index, p.scale, p.dst});
  check_index_rows("gather_rows", p, p.dst, p.src);
  const ScopedKernelTimer timer(device, "gather_rows");
  table.gather_rows(p);
}

void scatter_add_rows(const IndexRowsArgs& p) {
  const auto [table, device] = detail::table_for("scatter_add_rows", {p.src, p.index, p.scale, p.dst});
  check_index_rows("scatter_add_rows", p, p.src, p.dst);
  const ScopedKernelTimer timer(device, "scatter_add_rows");
  table.scatter_add_rows(p);
}

void row_dot(const RowDotArgs& p) {
  const auto [table, device] = detail::table_for("row_dot", {p.a, p.b, p.out});
  detail::check_present("row_dot", "a", p.a);
  detail::check_rank("row_dot", "a", *p.a, 2);
  detail::check_float("row_dot", "a", p.a, p.a->shape());
  detail::check_float("row_dot", "b", p.b, p.a->shape());
  check_f32("row_dot", "out", p.out, {p.a->dim(0)});
  const ScopedKernelTimer timer(device, "row_dot");
  table.row_dot(p);
}

}  // namespace moerun::kernels
