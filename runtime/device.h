// The Device: where tensors live and kernels run. Owns the memory contract (aligned,
// tracked allocations), copies between host and device, fill, synchronize. Does not own
// the math: each backend hands out a KernelTable (runtime/kernel_table.h) that the
// kernel functions in kernels/ dispatch to. See docs/device.md for how to add a backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/dtype.h"

namespace moerun {

struct KernelTable;  // defined in runtime/kernel_table.h; a backend fills one.
class KernelProfile;

struct MemoryStats {
  std::size_t current_bytes = 0;  // bytes allocated now
  std::size_t peak_bytes = 0;     // high-water mark since construction or reset_peak()
  std::size_t allocations = 0;    // number of live allocations
};

// A backend implements the protected do_* functions (and kernels()); the public
// functions add bookkeeping that every backend shares. Device memory is opaque to code
// above runtime/ and kernels/: it is touched only through copies, fills and kernels.
class Device {
 public:
  static constexpr std::size_t kAlignment = 64;  // bytes; a cache line, an AVX-512 vector

  virtual ~Device() = default;
  Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  virtual std::string name() const = 0;
  // The backend's kernels. Every kernel in kernels/ dispatches through this table.
  virtual const KernelTable& kernels() const = 0;
  // True when host code may read device pointers directly (MPI can take them as they
  // are). (optional) defaults to false: comm stages through host buffers.
  virtual bool host_accessible() const { return false; }
  // How this backend computes on `dtype` tensors, for the start-up line and the metrics
  // ("native (...)" or "emulated: ..."). (optional) defaults to "native".
  virtual std::string dtype_path(DType) const { return "native"; }
  // Blocks until all work submitted to the device has finished.
  virtual void synchronize() = 0;

  void* allocate(std::size_t bytes);
  void deallocate(void* ptr, std::size_t bytes);
  void copy_host_to_device(void* dst, const void* host_src, std::size_t bytes);
  void copy_device_to_host(void* host_dst, const void* src, std::size_t bytes);
  void copy_device_to_device(void* dst, const void* src, std::size_t bytes);
  // Sets `count` 32-bit words at dst to the bit pattern `word` (0.0f, 1.0f, index values).
  void fill32(void* dst, std::uint32_t word, std::size_t count);

  MemoryStats memory_stats() const { return stats_; }
  void reset_peak() { stats_.peak_bytes = stats_.current_bytes; }

  // While a profile is attached, every kernel call adds its time to it (null detaches).
  void set_profile(KernelProfile* profile) { profile_ = profile; }
  KernelProfile* profile() const { return profile_; }

 protected:
  virtual void* do_allocate(std::size_t bytes) = 0;  // aligned to kAlignment
  virtual void do_deallocate(void* ptr, std::size_t bytes) = 0;
  enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };
  virtual void do_copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) = 0;
  virtual void do_fill32(void* dst, std::uint32_t word, std::size_t count) = 0;

 private:
  MemoryStats stats_;
  KernelProfile* profile_ = nullptr;
};

}  // namespace moerun
