// Optimizer kernels: the AdamW update of one parameter, and the global gradient norm
// with clipping over a list of gradients.
#pragma once

#include <vector>

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void adamw_update(const AdamWArgs& args);

// sqrt(sum over tensors of sum of squares), each read to the host (tests, work between steps).
double global_norm(const std::vector<const Tensor*>& tensors);
// Scales every gradient by max_norm / norm when norm > max_norm. `norm` is passed in so
// that distributed callers can give the all-reduced norm; max_norm <= 0 disables clipping.
void clip_by_norm(const std::vector<Tensor*>& grads, double norm, double max_norm);

}  // namespace moerun::kernels
