// Declarations of the oneDNN CPU backend's kernels; cpu_kernels.cpp puts them in the table.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::cpu {

void matmul(const MatmulArgs& args);
void grouped_matmul(const GroupedMatmulArgs& args);
void activation_forward(const ActivationArgs& args);
void activation_backward(const ActivationArgs& args);
void swiglu_forward(const SwiGluArgs& args);
void swiglu_backward(const SwiGluArgs& args);
void binary(const BinaryArgs& args);
void axpy(const AxpyArgs& args);
void scale(Tensor& x, float alpha);
void sum_rows(const SumRowsArgs& args);
double sum_squares(const Tensor& x);
std::int64_t count_nonfinite(const Tensor& x);
void adamw(const AdamWArgs& args);
void softmax_forward(const SoftmaxArgs& args);
void softmax_backward(const SoftmaxArgs& args);
void layer_norm_forward(const LayerNormArgs& args);
void layer_norm_backward(const LayerNormArgs& args);
void rms_norm_forward(const RmsNormArgs& args);
void rms_norm_backward(const RmsNormArgs& args);
CrossEntropyResult cross_entropy_forward(const CrossEntropyArgs& args);
void cross_entropy_backward(const CrossEntropyArgs& args);
void top_k(const TopKArgs& args);
void gather_rows(const IndexRowsArgs& args);
void scatter_add_rows(const IndexRowsArgs& args);
void row_dot(const RowDotArgs& args);
void router_forward(const RouterArgs& args);
void router_backward(const RouterArgs& args);
void attention_forward(const AttentionArgs& args);
void attention_backward(const AttentionArgs& args);

}  // namespace moerun::cpu
