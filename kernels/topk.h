// Top-k over rows with indices (the router's expert choice).
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void top_k(const TopKArgs& args);

}  // namespace moerun::kernels
