#include "runtime/cpu/cpu_device.h"

#include <cstdlib>
#include <cstring>

#include "runtime/core/error.h"

namespace moerun {

CpuDevice::CpuDevice() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) { register_cpu_kernels(table_); }

CpuDevice::~CpuDevice() { deallocate(scratch_, scratch_bytes_); }

void* CpuDevice::scratch(std::size_t bytes) {
  if (bytes > scratch_bytes_) {
    deallocate(scratch_, scratch_bytes_);
    scratch_ = nullptr;
    scratch_ = allocate(bytes);
    scratch_bytes_ = bytes;
  }
  return scratch_;
}

void* CpuDevice::do_allocate(std::size_t bytes) {
  const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  return std::aligned_alloc(kAlignment, rounded);
}

void CpuDevice::do_deallocate(void* ptr, std::size_t) { std::free(ptr); }

void CpuDevice::do_copy(void* dst, const void* src, std::size_t bytes, CopyKind) { std::memmove(dst, src, bytes); }

void CpuDevice::do_fill32(void* dst, std::uint32_t word, std::size_t count) {
  auto* p = static_cast<std::uint32_t*>(dst);
  for (std::size_t i = 0; i < count; ++i) p[i] = word;
}

CpuDevice& cpu_device_of(const Tensor& t) {
  auto* cpu = dynamic_cast<CpuDevice*>(&t.device());
  MOERUN_CHECK(cpu != nullptr, KernelError, "[cpu backend] tensor lives on '{}', not on a CPU device", t.device().name());
  return *cpu;
}

}  // namespace moerun
