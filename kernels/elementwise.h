// Element-wise arithmetic and reductions over tensors: add/mul (with row broadcast),
// axpy, scale, sum over rows, sum of squares, non-finite count.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void binary(const BinaryArgs& args);
void axpy(const AxpyArgs& args);  // y += alpha * x
void scale(Tensor& x, float alpha);
void sum_rows(const SumRowsArgs& args);
double sum_squares(const Tensor& x);
std::int64_t count_nonfinite(const Tensor& x);

}  // namespace moerun::kernels
