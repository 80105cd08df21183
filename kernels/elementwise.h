// Element-wise arithmetic and reductions over tensors: add/mul (with row broadcast),
// axpy, scale, sum over rows, sum of squares, non-finite count, dtype conversion.
// binary takes f32 or bf16 operands (mixed); the others are f32.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void binary(const BinaryArgs& args);
void axpy(const AxpyArgs& args);  // y += alpha * x
void scale(Tensor& x, float alpha);
void sum_rows(const SumRowsArgs& args);
double sum_squares(const Tensor& x);
std::int64_t count_nonfinite(const Tensor& x);
// dst = src in dst's dtype (f32 <-> bf16, round to nearest even); shapes may differ, counts not.
void convert(const Tensor& src, Tensor& dst);

}  // namespace moerun::kernels
