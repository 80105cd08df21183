// Causal multi-head self-attention core (scores, masked softmax, weighted values) on a
// packed qkv tensor, forward and backward. Projections are matmuls done by the caller.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void attention_forward(const AttentionArgs& args);
void attention_backward(const AttentionArgs& args);

}  // namespace moerun::kernels
