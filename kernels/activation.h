// Point-wise activations (GELU, SiLU) and SwiGLU gating, forward and backward.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void activation_forward(const ActivationArgs& args);   // out = f(x)
void activation_backward(const ActivationArgs& args);  // out = dy * f'(x)
void swiglu_forward(const SwiGluArgs& args);           // y = silu(gate) * up
void swiglu_backward(const SwiGluArgs& args);          // dgate, dup from dy

}  // namespace moerun::kernels
