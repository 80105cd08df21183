#include "kernels/matmul.h"

#include "kernels/check.h"
#include "kernels/elementwise.h"
#include "runtime/error.h"

namespace moerun::kernels {
using detail::check_dtype;
using detail::check_present;
using detail::check_rank;

Shape op_shape(const Tensor& x, bool transpose) {
  return transpose ? Shape{x.dim(1), x.dim(0)} : Shape{x.dim(0), x.dim(1)};
}

namespace {
void check_matmul(std::string_view kernel, const MatmulArgs& p) {
  check_present(kernel, "a", p.a);
  check_present(kernel, "b", p.b);
  check_present(kernel, "c", p.c);
  for (auto [name, t] : {std::pair{"a", p.a}, std::pair{"b", p.b}, std::pair{"c", (const Tensor*)p.c}}) {
    detail::check_float(kernel, name, t, t->shape());
    check_rank(kernel, name, *t, 2);
  }
  const Shape sa = op_shape(*p.a, p.transpose_a);
  const Shape sb = op_shape(*p.b, p.transpose_b);
  MOERUN_CHECK(sa[1] == sb[0], KernelError,
               "[{}] op(a) is {} (a {}{}) but op(b) is {} (b {}{}): inner dimensions must agree", kernel,
               shape_string(sa), shape_string(p.a->shape()), p.transpose_a ? " transposed" : "", shape_string(sb),
               shape_string(p.b->shape()), p.transpose_b ? " transposed" : "");
  MOERUN_CHECK(p.c->shape() == (Shape{sa[0], sb[1]}), KernelError, "[{}] op(a) {} times op(b) {} gives {} but c is {}",
               kernel, shape_string(sa), shape_string(sb), shape_string(Shape{sa[0], sb[1]}),
               shape_string(p.c->shape()));
  if (p.bias != nullptr) detail::check_f32(kernel, "bias", p.bias, {sb[1]});
}
}  // namespace

void matmul(const MatmulArgs& args) {
  const auto [table, device] = detail::table_for("matmul", {args.a, args.b, args.bias, args.c});
  check_matmul("matmul", args);
  const ScopedKernelTimer timer(device, "matmul");
  table.matmul(args);
}

void grouped_matmul(const GroupedMatmulArgs& args) {
  if (args.groups.empty()) return;
  const MatmulArgs& first = args.groups.front();
  const auto [table, device] = detail::table_for("grouped_matmul", {first.a, first.b, first.c});
  for (const MatmulArgs& g : args.groups) {
    detail::table_for("grouped_matmul", {first.a, g.a, g.b, g.bias, g.c});
    check_matmul("grouped_matmul", g);
    // Groups differ only in the token count: the rows of a (and of b when a is transposed).
    MOERUN_CHECK(g.transpose_a == first.transpose_a && g.transpose_b == first.transpose_b &&
                     g.accumulate == first.accumulate && (g.bias != nullptr) == (first.bias != nullptr) &&
                     g.a->dim(1) == first.a->dim(1) && g.b->dim(1) == first.b->dim(1) &&
                     g.a->dtype() == first.a->dtype() && g.b->dtype() == first.b->dtype() &&
                     g.c->dtype() == first.c->dtype() &&
                     (g.transpose_a || g.b->dim(0) == first.b->dim(0)) && !(g.transpose_a && g.transpose_b),
                 KernelError,
                 "[grouped_matmul] groups may differ only in their row count (tokens): the first has a {} b {}, "
                 "another a {} b {} (flags and dtypes must match too; a and b cannot both be transposed)",
                 shape_string(first.a->shape()), shape_string(first.b->shape()), shape_string(g.a->shape()),
                 shape_string(g.b->shape()));
  }
  const ScopedKernelTimer timer(device, "grouped_matmul");
  table.grouped_matmul(args);
}

namespace {
// The blockwise kernels' shared checks: labels i32 [blocks, 1], x [blocks x block, k]; returns k.
std::int64_t check_blocks(std::string_view kernel, const BlockMatmulArgs& p) {
  check_present(kernel, "labels", p.labels);
  check_dtype(kernel, "labels", *p.labels, DType::I32);
  check_rank(kernel, "labels", *p.labels, 2);
  detail::check_shape(kernel, "labels", *p.labels, {p.labels->dim(0), 1});
  MOERUN_CHECK(p.block > 0, KernelError, "[{}] block must be positive, got {}", kernel, p.block);
  check_present(kernel, "x", p.x);
  check_rank(kernel, "x", *p.x, 2);
  MOERUN_CHECK(p.x->dim(0) == p.labels->dim(0) * p.block, KernelError, "[{}] x has {} rows but {} blocks of {} need {}",
               kernel, p.x->dim(0), p.labels->dim(0), p.block, p.labels->dim(0) * p.block);
  detail::check_float(kernel, "x", p.x, p.x->shape());
  return p.x->dim(1);
}
}  // namespace

void block_matmul(const BlockMatmulArgs& p) {
  constexpr std::string_view k = "block_matmul";
  const auto [table, device] = detail::table_for(k, {p.labels, p.x, p.out});
  const std::int64_t inner = check_blocks(k, p);
  MOERUN_CHECK(!p.weights.empty(), KernelError, "[block_matmul] no weights");
  for (const Tensor* w : p.weights) check_present(k, "weights", w);
  const Tensor& w0 = *p.weights.front();
  for (const Tensor* w : p.weights) {
    detail::table_for(k, {p.x, w});
    MOERUN_CHECK(w->shape() == w0.shape() && w->dtype() == w0.dtype(), KernelError,
                 "[block_matmul] weights differ: {} and {}", shape_string(w0.shape()), shape_string(w->shape()));
  }
  detail::check_float(k, "weights", &w0, w0.shape());
  check_rank(k, "weights", w0, 2);
  const Shape op_w = op_shape(w0, p.transpose_weights);
  MOERUN_CHECK(op_w[0] == inner, KernelError, "[block_matmul] x has {} columns but op(weight) is {}", inner,
               shape_string(op_w));
  detail::check_float(k, "out", p.out, {p.x->dim(0), op_w[1]});
  const ScopedKernelTimer timer(device, "block_matmul");
  table.block_matmul(p);
}

void block_weight_grad(const BlockMatmulArgs& p) {
  constexpr std::string_view k = "block_weight_grad";
  const auto [table, device] = detail::table_for(k, {p.labels, p.x, p.dy});
  const std::int64_t inner = check_blocks(k, p);
  check_present(k, "dy", p.dy);
  check_rank(k, "dy", *p.dy, 2);
  detail::check_float(k, "dy", p.dy, {p.x->dim(0), p.dy->dim(1)});
  MOERUN_CHECK(!p.grads.empty(), KernelError, "[block_weight_grad] no gradients");
  for (Tensor* g : p.grads) {
    detail::table_for(k, {p.x, g});
    detail::check_f32(k, "grads", g, {inner, p.dy->dim(1)});
  }
  const ScopedKernelTimer timer(device, "block_weight_grad");
  table.block_weight_grad(p);
}

void linear_backward(const Tensor& a, const Tensor& w, const Tensor& dc, const LinearGrads& grads) {
  if (grads.da != nullptr) matmul({.a = &dc, .b = &w, .c = grads.da, .transpose_b = true});
  if (grads.dw != nullptr) matmul({.a = &a, .b = &dc, .c = grads.dw, .transpose_a = true, .accumulate = grads.accumulate});
  if (grads.dbias != nullptr) sum_rows({.x = &dc, .out = grads.dbias, .accumulate = grads.accumulate});
}

}  // namespace moerun::kernels
