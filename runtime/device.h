// The Device: where tensors live and kernels run. Owns the memory contract (aligned,
// tracked allocations), copies between host and device, fill, synchronize. Does not own
// the math: each backend hands out a KernelTable (runtime/kernel_table.h) that the
// kernel functions in kernels/ dispatch to. See docs/device.md for how to add a backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "runtime/dtype.h"

namespace moerun {

struct KernelTable;  // defined in runtime/kernel_table.h; a backend fills one.
class KernelProfile;
class Tensor;

// Where device work is ordered. Kernels run on Compute; asynchronous copies may go on either.
// Work on one queue runs in submission order; across queues only events order it.
enum class Queue { Compute = 0, Transfer = 1 };

// A point in a queue's work, from record_event. id 0 is an event that has already completed.
struct Event {
  std::uint64_t id = 0;
};

// Copies between the host and the device since the last take (the metrics' round trips).
struct TransferStats {
  // Synchronous device->host copies: the host stops until the device has caught up and reads
  // device values (a round trip an accelerator pays for). The asynchronous ones below stage
  // communication and stop nothing.
  std::int64_t host_reads = 0;
  std::int64_t device_to_host_copies = 0;  // synchronous and asynchronous
  std::int64_t device_to_host_bytes = 0;
  std::int64_t host_to_device_copies = 0;
  std::int64_t host_to_device_bytes = 0;
};

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

  // The asynchronous contract (docs/device.md, "Queues and events"). An async copy is
  // enqueued on `queue` and may run later: the host buffer must stay untouched (and alive)
  // until an event recorded after it has completed. The copies above are the synchronous
  // form: enqueued on Compute, and the host waits for them.
  void copy_device_to_host_async(Queue queue, void* host_dst, const void* src, std::size_t bytes);
  void copy_host_to_device_async(Queue queue, void* dst, const void* host_src, std::size_t bytes);
  // An event that completes when everything enqueued on `queue` so far has.
  Event record_event(Queue queue) { return do_record_event(queue); }
  // Device-side: work enqueued on `queue` after this call starts after `event` completed.
  void queue_wait(Queue queue, Event event) { do_queue_wait(queue, event); }
  // Host-side: returns when `event` has completed.
  void host_wait(Event event) { do_host_wait(event); }
  // True when `event` has completed (never blocks).
  bool query(Event event) { return do_query(event); }
  // Sets `count` 32-bit words at dst to the bit pattern `word` (0.0f, 1.0f, index values).
  void fill32(void* dst, std::uint32_t word, std::size_t count);

  MemoryStats memory_stats() const { return stats_; }
  // Host <-> device copies since the last call (synchronous and asynchronous alike).
  TransferStats take_transfer_stats();

  // Step markers: the trainer brackets every optimizer step (what lies between steps, such as
  // rebalancing, checkpoints and evaluation, is outside). begin_step restarts the transfer
  // counters; a compiling backend may treat a step as one graph.
  void begin_step() {
    transfers_ = {};
    on_begin_step();
  }
  void end_step() { on_end_step(); }

  // Shapes, for backends that compile kernels ahead of time. kernels/ reports every kernel
  // call with its tensors (before dispatch). When every per-step shape is a function of the
  // config (moe.shapes = static), the trainer declares that no step after the first
  // `warmup_steps` runs a kernel with a new shape. (optional) all default to no-ops.
  virtual void on_kernel(std::string_view /*kernel*/, std::initializer_list<const Tensor*> /*tensors*/) {}
  virtual void expect_static_shapes(int /*warmup_steps*/) {}
  // Distinct kernel shape signatures seen so far (0 when the backend does not record them).
  virtual std::int64_t shape_signatures() const { return 0; }
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
  // (optional) the asynchronous half. The defaults run eagerly: an async copy is done when it
  // returns, and every event has already completed.
  virtual void do_copy_async(Queue /*queue*/, void* dst, const void* src, std::size_t bytes, CopyKind kind) {
    do_copy(dst, src, bytes, kind);
  }
  virtual Event do_record_event(Queue /*queue*/) { return {}; }
  virtual void do_queue_wait(Queue /*queue*/, Event /*event*/) {}
  virtual void do_host_wait(Event /*event*/) {}
  virtual bool do_query(Event /*event*/) { return true; }
  virtual void on_begin_step() {}
  virtual void on_end_step() {}

 private:
  void count_transfer(CopyKind kind, std::size_t bytes);

  MemoryStats stats_;
  TransferStats transfers_;
  KernelProfile* profile_ = nullptr;
};

}  // namespace moerun
