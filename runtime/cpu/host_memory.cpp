#include "runtime/cpu/host_memory.h"

#include <cstdint>
#include <cstdlib>
#include <limits>

#ifdef __GLIBC__
#include <malloc.h>
#endif
#ifdef __linux__
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "runtime/device.h"

namespace moerun::cpu {
namespace {

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

#ifdef __linux__
std::size_t page_bytes() {
  static const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

// A mapping of `bytes` whose start is 2 MiB aligned: map one huge page more than needed and
// unmap the unaligned head and the tail. The last partial 2 MiB of the block stays in small
// pages, so a block never holds more memory than its pages.
void* map_huge_aligned(std::size_t bytes) {
  const std::size_t length = round_up(bytes, page_bytes());
  void* raw = mmap(nullptr, length + kHugePageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const auto start = reinterpret_cast<std::uintptr_t>(raw);
  const auto aligned = round_up(start, kHugePageBytes);
  if (aligned > start) munmap(raw, aligned - start);
  munmap(reinterpret_cast<void*>(aligned + length), start + kHugePageBytes - aligned);  // never empty
  auto* block = reinterpret_cast<void*>(aligned);
  madvise(block, length, MADV_HUGEPAGE);  // advice only: without THP the block has small pages
  return block;
}
#endif

}  // namespace

void* allocate_host_block(std::size_t bytes) {
#ifdef __linux__
  if (bytes >= kHugePageBytes) return map_huge_aligned(bytes);
#endif
  return std::aligned_alloc(Device::kAlignment, bytes);
}

void free_host_block(void* block, std::size_t bytes) {
#ifdef __linux__
  if (bytes >= kHugePageBytes) {
    munmap(block, round_up(bytes, page_bytes()));
    return;
  }
#endif
  (void)bytes;
  std::free(block);
}

void keep_freed_host_memory() {
#ifdef __GLIBC__
  static const bool once = [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest; larger requests are still mapped
    mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
    return true;
  }();
  (void)once;
#endif
}

}  // namespace moerun::cpu
