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
// Into a device scalar (ReduceArgs), read later with the step's other values.
void sum_squares(const ReduceArgs& args);
void count_nonfinite(const ReduceArgs& args);
// The same, read at once (one device->host copy each): for tests and work between steps.
double read_sum_squares(const Tensor& x);
std::int64_t read_count_nonfinite(const Tensor& x);
// dst = src in dst's dtype (f32 <-> bf16, round to nearest even); shapes may differ, counts not.
void convert(const Tensor& src, Tensor& dst);

}  // namespace moerun::kernels
