// The one place where the oneDNN CPU backend's kernels are put into its KernelTable.
#include "runtime/cpu/cpu_kernels.h"

#include "runtime/cpu/cpu_device.h"

namespace moerun {

namespace cpu {
std::int64_t primitives_created(const Device& d) { return static_cast<const CpuDevice&>(d).primitives_created(); }
}  // namespace cpu

void register_cpu_kernels(KernelTable& t) {
#define MOERUN_CPU_REGISTER(ret, name, params) t.name = cpu::name;
  MOERUN_KERNELS(MOERUN_CPU_REGISTER)
#undef MOERUN_CPU_REGISTER
}

}  // namespace moerun
