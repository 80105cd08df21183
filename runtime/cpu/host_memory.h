// Host memory for the CPU backend: where its blocks come from, and how the process keeps
// memory it freed. On the Zen 5 VM of docs/performance.md the first touch of a fresh 4 KiB page
// cost 13.7 us (64 MiB: 223 ms), while writing the same memory again took 2.6 ms; advised
// as transparent huge pages, a first touch took 4.3 ms (140 ms the first time the VM's host
// backed that memory). Memory handed back to the OS is fresh again at its next use, so the
// backend keeps what it freed and maps large blocks as huge pages.
#pragma once

#include <cstddef>

namespace moerun::cpu {

// Blocks of this size or more are mapped on 2 MiB boundaries and advised as transparent huge
// pages (where the kernel offers them: THP `always` or `madvise`; with `never` they stay 4 KiB).
inline constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;

// A block of `bytes` (a multiple of Device::kAlignment) aligned to it, or nullptr when out of
// memory.
void* allocate_host_block(std::size_t bytes);
// Returns a block of allocate_host_block(bytes) to the OS.
void free_host_block(void* block, std::size_t bytes);

// Once per process (glibc only): memory that oneDNN and the rest of the process malloc and
// free is kept in the heap rather than unmapped or trimmed. oneDNN's gemm kernels allocate
// their packing buffers (up to a few MiB) on every call; with glibc's defaults each call
// faulted them in again.
void keep_freed_host_memory();

}  // namespace moerun::cpu
