// The MoE router: softmax gating with top-k choice and renormalized gates, and its backward
// including the load-balancing (aux) and z-loss gradients. Fused because on an accelerator
// it is one small kernel over [tokens, experts], not ten.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void router_forward(const RouterArgs& args);
void router_backward(const RouterArgs& args);

}  // namespace moerun::kernels
