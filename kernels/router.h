// The MoE router: softmax or sigmoid scores, the top-k choice (optionally on scores plus a
// selection-only bias) and renormalized gates, and its backward including the load-balancing
// (aux, per micro-batch or per sequence) and z-loss gradients. Fused because on an accelerator
// it is one small kernel over [tokens, experts], not ten.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void router_forward(const RouterArgs& args);
void router_backward(const RouterArgs& args);

}  // namespace moerun::kernels
