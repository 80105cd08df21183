// Declarations of the oneDNN CPU backend's kernels, one per entry of the kernel list
// (runtime/kernel_table.h); cpu_kernels.cpp puts them in the table.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::cpu {

#define MOERUN_CPU_KERNEL(ret, name, params) ret name params;
MOERUN_KERNELS(MOERUN_CPU_KERNEL)
#undef MOERUN_CPU_KERNEL

}  // namespace moerun::cpu
