// CpuDevice: the oneDNN CPU backend's Device. Owns the oneDNN engine and stream, the
// primitive cache, a reusable scratch buffer, a block cache for memory, and the backend's
// KernelTable (cpu_kernels.cpp). Memory is host memory, so host_accessible() is true. It runs
// eagerly: asynchronous copies are done when they return and every event has completed.
// The strict test backend (runtime/strict/) derives from it to reuse its kernels.
//
// Block cache: training frees and re-allocates the same activation buffers every
// micro-batch; handing them back to malloc made the kernel zero fresh pages each time (a
// third of a step's time was system time). Freed blocks are kept per size class (four
// classes per power of two, at most 25% slack) and reused best-fit: a request takes the
// smallest cached block of its class or larger, up to kMaxReuseFactor times its class. Exact
// classes alone were not enough: expert buffers change size with the routing every step, and
// each new class was fresh memory (20-180 MB of new blocks a step at Zipf 1.2, docs/
// performance.md). Blocks come from host_memory.h (large ones as huge pages);
// release_cached() returns the cache.
#pragma once

#include <dnnl.hpp>

#include <map>
#include <unordered_map>
#include <vector>

#include "runtime/kernel_table.h"
#include "runtime/device.h"
#include "runtime/cpu/primitive_cache.h"

namespace moerun {

class CpuDevice : public Device {
 public:
  CpuDevice();
  ~CpuDevice() override;

  std::string name() const override { return "cpu(oneDNN)"; }
  const KernelTable& kernels() const override { return table_; }
  bool host_accessible() const override { return true; }
  std::string dtype_path(DType dtype) const override;
  void synchronize() override { stream_.wait(); }

  dnnl::engine& engine() { return engine_; }
  dnnl::stream& stream() { return stream_; }
  PrimitiveCache& cache() { return cache_; }
  std::int64_t primitives_created() const { return cache_.created(); }
  // A device buffer of at least `bytes`, reused across calls (grown when too small).
  // Valid until the next scratch() call; kernels use it for temporaries.
  void* scratch(std::size_t bytes);
  std::size_t cached_bytes() const { return cached_bytes_; }
  // Blocks taken from the host so far (the rest of the allocations reused a cached block).
  std::int64_t blocks_created() const { return blocks_created_; }
  void release_cached();

 protected:
  // Frees the scratch buffer now (a derived device with its own memory calls it in its
  // destructor, while its do_deallocate still runs).
  void release_scratch();
  void* do_allocate(std::size_t bytes) override;
  void do_deallocate(void* ptr, std::size_t bytes) override;
  void do_copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) override;
  void do_fill32(void* dst, std::uint32_t word, std::size_t count) override;

 private:
  dnnl::engine engine_;
  dnnl::stream stream_;
  PrimitiveCache cache_;
  KernelTable table_;
  void* scratch_ = nullptr;
  std::size_t scratch_bytes_ = 0;
  static constexpr std::size_t kMaxReuseFactor = 2;
  std::map<std::size_t, std::vector<void*>> free_blocks_;  // size class -> free blocks (none empty)
  std::unordered_map<void*, std::size_t> block_bytes_;    // block handed out -> its size class
  std::size_t cached_bytes_ = 0;
  std::int64_t blocks_created_ = 0;
};

// The CpuDevice a tensor lives on (backend kernels only).
CpuDevice& cpu_device_of(const Tensor& t);

// Fills `table` with the oneDNN CPU kernels (cpu_kernels.cpp).
void register_cpu_kernels(KernelTable& table);

}  // namespace moerun
