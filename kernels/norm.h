// Layer norm and RMS norm over the last dimension of [n, d], forward and backward.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void layer_norm_forward(const LayerNormArgs& args);
void layer_norm_backward(const LayerNormArgs& args);
void rms_norm_forward(const RmsNormArgs& args);
void rms_norm_backward(const RmsNormArgs& args);

}  // namespace moerun::kernels
