#include "runtime/cpu/cpu_device.h"

#include <cstdlib>
#include <cstring>

#include "runtime/cpu/cpu_precision.h"
#include "runtime/cpu/host_memory.h"
#include "runtime/error.h"

namespace moerun {

CpuDevice::CpuDevice() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
  cpu::keep_freed_host_memory();
  register_cpu_kernels(table_);
}

std::string CpuDevice::dtype_path(DType dtype) const { return dtype == DType::BF16 ? cpu::bf16_path() : "native"; }

CpuDevice::~CpuDevice() {
  release_scratch();
  release_cached();
}

void CpuDevice::release_scratch() {
  deallocate(scratch_, scratch_bytes_);
  scratch_ = nullptr;
  scratch_bytes_ = 0;
}

namespace {
// The size class of a request: the next of four steps per power of two (x1, x1.25, x1.5,
// x1.75), in whole cache lines.
std::size_t size_class(std::size_t bytes) {
  std::size_t lines = (bytes + Device::kAlignment - 1) / Device::kAlignment;
  if (lines <= 4) return lines * Device::kAlignment;
  std::size_t top = 1;
  while (top * 2 <= lines) top *= 2;
  const std::size_t step = top / 4;
  return ((lines + step - 1) / step) * step * Device::kAlignment;
}
}  // namespace

void CpuDevice::release_cached() {
  for (auto& [size, blocks] : free_blocks_)
    for (void* p : blocks) cpu::free_host_block(p, size);
  free_blocks_.clear();
  cached_bytes_ = 0;
}

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
  const std::size_t cls = size_class(bytes);
  // The smallest cached block that fits, unless it is more than kMaxReuseFactor times the
  // request's class (then a small buffer would hold memory a large one needs later).
  auto it = free_blocks_.lower_bound(cls);
  if (it != free_blocks_.end() && it->first <= cls * kMaxReuseFactor) {
    const std::size_t block = it->first;
    void* p = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) free_blocks_.erase(it);
    cached_bytes_ -= block;
    block_bytes_.emplace(p, block);
    return p;
  }
  void* p = cpu::allocate_host_block(cls);
  if (p == nullptr && cached_bytes_ > 0) {  // out of memory: give the cache back and retry once
    release_cached();
    p = cpu::allocate_host_block(cls);
  }
  if (p != nullptr) {
    ++blocks_created_;
    block_bytes_.emplace(p, cls);
  }
  return p;
}

void CpuDevice::do_deallocate(void* ptr, std::size_t) {
  auto block = block_bytes_.extract(ptr);
  MOERUN_CHECK(!block.empty(), RuntimeError, "[cpu device] deallocate: {} was not allocated here", ptr);
  free_blocks_[block.mapped()].push_back(ptr);
  cached_bytes_ += block.mapped();
}

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
