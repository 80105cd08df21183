// StrictDevice ("strict"): the CPU kernels behind the contract of a compiled accelerator, for
// the tests. It is as strict as a real device where the CPU backend is lenient:
//   - Memory is not host memory (strict_arena.h): host_accessible() is false, so communication
//     stages through host buffers for real, and host code that dereferences a device pointer
//     dies with a message naming the cause.
//   - Copies are asynchronous for real: an async copy runs only when the host waits for an
//     event recorded after it, when a later kernel or copy on its queue needs it, or when a
//     queue that waits for it runs. Code that reads a host buffer before waiting sees stale data.
//   - Shapes are recorded: every kernel's signature (name, dtypes, shapes). After
//     expect_static_shapes(warmup), a new signature inside a step (between begin_step and
//     end_step) after the first `warmup` steps throws a DeviceError naming the kernel and
//     shapes ("a compiled accelerator would recompile here"). Work between steps (evaluation,
//     rebalancing, checkpoints) compiles as graphs of its own and is not checked.
// Kernels run eagerly on the Compute queue (with every earlier Compute operation done first).
#pragma once

#include <deque>
#include <string>
#include <unordered_set>

#include "runtime/cpu/cpu_device.h"

namespace moerun {

class StrictDevice final : public CpuDevice {
 public:
  StrictDevice();
  ~StrictDevice() override;

  std::string name() const override { return "strict(cpu kernels)"; }
  const KernelTable& kernels() const override { return strict_table_; }
  bool host_accessible() const override { return false; }
  void synchronize() override;

  void on_kernel(std::string_view kernel, std::initializer_list<const Tensor*> tensors) override;
  void expect_static_shapes(int warmup_steps) override { static_after_ = warmup_steps; }
  std::int64_t shape_signatures() const override { return static_cast<std::int64_t>(signatures_.size()); }

  // Runs every operation enqueued on `queue` so far (kernels call it for Compute).
  void flush(Queue queue);

 protected:
  void* do_allocate(std::size_t bytes) override;
  void do_deallocate(void* ptr, std::size_t bytes) override;
  void do_copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) override;
  void do_fill32(void* dst, std::uint32_t word, std::size_t count) override;
  void do_copy_async(Queue queue, void* dst, const void* src, std::size_t bytes, CopyKind kind) override;
  Event do_record_event(Queue queue) override;
  void do_queue_wait(Queue queue, Event event) override;
  void do_host_wait(Event event) override;
  bool do_query(Event event) override;
  void on_begin_step() override { in_step_ = true; }
  void on_end_step() override {
    in_step_ = false;
    ++steps_;
  }

 private:
  struct Operation {
    enum Kind { Copy, Signal, Wait } kind = Copy;
    void* dst = nullptr;
    const void* src = nullptr;
    std::size_t bytes = 0;
    std::uint64_t event = 0;  // Signal: the event it completes; Wait: the event it waits for
  };
  // Runs `queue`'s operations in order until `until` has been signalled (0: all of them).
  void run(Queue queue, std::uint64_t until);

  KernelTable strict_table_;
  std::deque<Operation> pending_[2];
  std::uint64_t next_event_ = 1;
  std::uint64_t signalled_[2] = {0, 0};  // per queue: the last event it signalled
  std::unordered_set<std::string> signatures_;
  int steps_ = 0;  // steps ended
  bool in_step_ = false;
  int static_after_ = -1;  // -1: shapes may change (dynamic mode)
};

}  // namespace moerun
