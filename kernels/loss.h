// Cross-entropy with logits (fused softmax), forward and backward.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void cross_entropy_forward(const CrossEntropyArgs& args);
void cross_entropy_backward(const CrossEntropyArgs& args);

}  // namespace moerun::kernels
