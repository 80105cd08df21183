#include "kernels/elementwise.h"

#include "kernels/check.h"
#include "runtime/error.h"

namespace moerun::kernels {
using detail::check_f32;

void binary(const BinaryArgs& p) {
  constexpr std::string_view k = "binary";
  const auto [table, device] = detail::table_for(k, {p.a, p.b, p.out});
  detail::check_present(k, "a", p.a);
  detail::check_present(k, "b", p.b);
  detail::check_float(k, "a", p.a, p.a->shape());
  detail::check_float(k, "out", p.out, p.a->shape());
  const bool same = p.b->shape() == p.a->shape();
  const bool row = p.a->rank() == 2 && p.b->shape() == Shape{p.a->dim(1)};
  MOERUN_CHECK(same || row, KernelError, "[binary] b must be shaped like a {} or be one row [{}], but is {}",
               shape_string(p.a->shape()), p.a->rank() == 2 ? p.a->dim(1) : 0, shape_string(p.b->shape()));
  detail::check_float(k, "b", p.b, p.b->shape());
  const ScopedKernelTimer timer(device, "binary");
  table.binary(p);
}

void axpy(const AxpyArgs& p) {
  const auto [table, device] = detail::table_for("axpy", {p.x, p.y});
  detail::check_present("axpy", "x", p.x);
  check_f32("axpy", "x", p.x, p.x->shape());
  check_f32("axpy", "y", p.y, p.x->shape());
  const ScopedKernelTimer timer(device, "axpy");
  table.axpy(p);
}

void scale(Tensor& x, float alpha) {
  const auto [table, device] = detail::table_for("scale", {&x});
  detail::check_dtype("scale", "x", x, DType::F32);
  const ScopedKernelTimer timer(device, "scale");
  table.scale(x, alpha);
}

void sum_rows(const SumRowsArgs& p) {
  const auto [table, device] = detail::table_for("sum_rows", {p.x, p.out});
  detail::check_present("sum_rows", "x", p.x);
  detail::check_rank("sum_rows", "x", *p.x, 2);
  check_f32("sum_rows", "x", p.x, p.x->shape());
  check_f32("sum_rows", "out", p.out, {p.x->dim(1)});
  const ScopedKernelTimer timer(device, "sum_rows");
  table.sum_rows(p);
}

namespace {
// A reduction into a fresh device scalar.
Tensor read_one(Device& device, void (*reduce)(const ReduceArgs&), const Tensor& x) {
  Tensor out(device, {1});
  reduce({.x = &x, .out = &out});
  return out;
}
}  // namespace

void sum_squares(const ReduceArgs& p) {
  const auto [table, device] = detail::table_for("sum_squares", {p.x, p.out});
  detail::check_present("sum_squares", "x", p.x);
  check_f32("sum_squares", "x", p.x, p.x->shape());
  check_f32("sum_squares", "out", p.out, {1});
  const ScopedKernelTimer timer(device, "sum_squares");
  table.sum_squares(p);
}

void count_nonfinite(const ReduceArgs& p) {
  const auto [table, device] = detail::table_for("count_nonfinite", {p.x, p.out});
  detail::check_present("count_nonfinite", "x", p.x);
  check_f32("count_nonfinite", "x", p.x, p.x->shape());
  check_f32("count_nonfinite", "out", p.out, {1});
  const ScopedKernelTimer timer(device, "count_nonfinite");
  table.count_nonfinite(p);
}

double read_sum_squares(const Tensor& x) {
  return double(read_one(x.device(), &sum_squares, x).to_host().front());
}

std::int64_t read_count_nonfinite(const Tensor& x) {
  return static_cast<std::int64_t>(read_one(x.device(), &count_nonfinite, x).to_host().front());
}

void convert(const Tensor& src, Tensor& dst) {
  const auto [table, device] = detail::table_for("convert", {&src, &dst});
  MOERUN_CHECK(src.numel() == dst.numel(), KernelError, "[convert] src {} and dst {} differ in element count",
               shape_string(src.shape()), shape_string(dst.shape()));
  detail::check_float("convert", "src", &src, src.shape());
  detail::check_float("convert", "dst", &dst, dst.shape());
  const ScopedKernelTimer timer(device, "convert");
  table.convert(src, dst);
}

}  // namespace moerun::kernels
