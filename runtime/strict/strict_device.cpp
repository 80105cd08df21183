#include "runtime/strict/strict_device.h"

#include <cstring>
#include <set>
#include <utility>

#include "runtime/error.h"
#include "runtime/kernel_table.h"
#include "runtime/strict/strict_arena.h"

namespace moerun {

namespace {
using strict::StrictArena;

// The devices of this process; kernels find the strict device of their tensors through it.
// Every kernel's arguments hold at least one tensor, but the table's entries are plain
// function pointers, so the wrapper flushes every strict device's Compute queue (tests make
// one or two devices).
std::set<StrictDevice*>& live_devices() {
  static std::set<StrictDevice*> devices;
  return devices;
}

const KernelTable& cpu_table() {
  static const KernelTable table = [] {
    KernelTable t;
    register_cpu_kernels(t);
    return t;
  }();
  return table;
}

// One wrapper per kernel entry: earlier Compute work first, then the CPU kernel inside an
// access window (the only time the arena is readable).
template <auto Entry>
struct Guarded;
template <typename R, typename... A, R (*KernelTable::*Entry)(A...)>
struct Guarded<Entry> {
  static R call(A... args) {
    for (StrictDevice* d : live_devices()) d->flush(Queue::Compute);
    const StrictArena::AccessWindow window;
    return (cpu_table().*Entry)(std::forward<A>(args)...);
  }
};

std::string signature_of(std::string_view kernel, std::initializer_list<const Tensor*> tensors) {
  std::string s(kernel);
  for (const Tensor* t : tensors) {
    s += ' ';
    s += t == nullptr ? "-" : std::string(dtype_name(t->dtype())) + shape_string(t->shape());
  }
  return s;
}
}  // namespace

StrictDevice::StrictDevice() {
  live_devices().insert(this);
#define MOERUN_STRICT_ENTRY(ret, name, params) strict_table_.name = &Guarded<&KernelTable::name>::call;
  MOERUN_KERNELS(MOERUN_STRICT_ENTRY)
#undef MOERUN_STRICT_ENTRY
}

StrictDevice::~StrictDevice() {
  synchronize();
  release_scratch();  // while do_deallocate is still this class's
  live_devices().erase(this);
}

void StrictDevice::on_kernel(std::string_view kernel, std::initializer_list<const Tensor*> tensors) {
  std::string signature = signature_of(kernel, tensors);
  if (signatures_.count(signature) != 0) return;
  MOERUN_CHECK(static_after_ < 0 || !in_step_ || steps_ < static_after_, DeviceError,
               "[strict device] new kernel shape after warm-up (step {}, warm-up {} steps): {}. A compiled "
               "accelerator would recompile here: some per-step shape depends on the data, not only on the config",
               steps_ + 1, static_after_, signature);
  signatures_.insert(std::move(signature));
}

void* StrictDevice::do_allocate(std::size_t bytes) { return StrictArena::instance().allocate(bytes); }

void StrictDevice::do_deallocate(void* ptr, std::size_t bytes) {
  synchronize();  // no queued copy may touch freed memory
  StrictArena::instance().deallocate(ptr, bytes);
}

void StrictDevice::do_copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) {
  do_copy_async(Queue::Compute, dst, src, bytes, kind);
  flush(Queue::Compute);
}

void StrictDevice::do_fill32(void* dst, std::uint32_t word, std::size_t count) {
  flush(Queue::Compute);
  const StrictArena::AccessWindow window;
  auto* p = static_cast<std::uint32_t*>(dst);
  for (std::size_t i = 0; i < count; ++i) p[i] = word;
}

void StrictDevice::do_copy_async(Queue queue, void* dst, const void* src, std::size_t bytes, CopyKind) {
  pending_[static_cast<int>(queue)].push_back({.kind = Operation::Copy, .dst = dst, .src = src, .bytes = bytes});
}

Event StrictDevice::do_record_event(Queue queue) {
  const std::uint64_t id = 2 * next_event_++ + static_cast<std::uint64_t>(queue);  // the queue in the low bit
  pending_[static_cast<int>(queue)].push_back({.kind = Operation::Signal, .event = id});
  return {id};
}

void StrictDevice::do_queue_wait(Queue queue, Event event) {
  if (event.id != 0) pending_[static_cast<int>(queue)].push_back({.kind = Operation::Wait, .event = event.id});
}

bool StrictDevice::do_query(Event event) {
  // A queue signals its events in the order they were recorded.
  return event.id == 0 || signalled_[event.id % 2] >= event.id;
}

void StrictDevice::do_host_wait(Event event) {
  if (do_query(event)) return;
  run(static_cast<Queue>(event.id % 2), event.id);
}

void StrictDevice::flush(Queue queue) { run(queue, 0); }

void StrictDevice::synchronize() {
  flush(Queue::Compute);
  flush(Queue::Transfer);
}

void StrictDevice::run(Queue queue, std::uint64_t until) {
  std::deque<Operation>& ops = pending_[static_cast<int>(queue)];
  while (!ops.empty()) {
    const Operation op = ops.front();
    ops.pop_front();
    switch (op.kind) {
      case Operation::Copy: {
        const StrictArena::AccessWindow window;
        std::memmove(op.dst, op.src, op.bytes);
        break;
      }
      case Operation::Signal:
        signalled_[static_cast<int>(queue)] = op.event;
        if (op.event == until) return;
        break;
      case Operation::Wait:
        if (!do_query({op.event})) run(static_cast<Queue>(op.event % 2), op.event);
        break;
    }
  }
}

}  // namespace moerun
