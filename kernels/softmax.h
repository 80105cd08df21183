// Row-wise softmax over the last dimension, forward and backward.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void softmax_forward(const SoftmaxArgs& args);   // out = softmax(x)
void softmax_backward(const SoftmaxArgs& args);  // out = y * (dy - rowsum(dy * y))

}  // namespace moerun::kernels
