// Matrix products through the device: plain (optional transposes, bias, accumulate), grouped
// (one call for many a's of different row counts, as experts see) and blockwise (blocks of
// one shape, each with the FFN its device-side label names: BlockMatmulArgs).
// The backward of c = a b + bias is three matmul calls; matmul_backward does them.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void matmul(const MatmulArgs& args);
void grouped_matmul(const GroupedMatmulArgs& args);
void block_matmul(const BlockMatmulArgs& args);
void block_weight_grad(const BlockMatmulArgs& args);

// For c[m, n] = a[m, k] w[k, n] + bias: da = dc w^T, dw (+)= a^T dc, dbias (+)= sum_rows(dc).
// Any output may be null; accumulate adds the weight and bias gradients into dw, dbias
// (gradient accumulation); da is always overwritten.
struct LinearGrads {
  Tensor* da = nullptr;
  Tensor* dw = nullptr;
  Tensor* dbias = nullptr;
  bool accumulate = false;
};
void linear_backward(const Tensor& a, const Tensor& w, const Tensor& dc, const LinearGrads& grads);

// Shape of op(x) for a 2-D tensor.
Shape op_shape(const Tensor& x, bool transpose);

}  // namespace moerun::kernels
