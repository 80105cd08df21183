#include "runtime/strict/strict_arena.h"

#include <execinfo.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "runtime/error.h"

namespace moerun::strict {

namespace {
constexpr std::size_t kReservation = std::size_t{64} << 30;
constexpr std::size_t kAlign = 64;
constexpr std::size_t kPage = 4096;

std::size_t round_up(std::size_t x, std::size_t to) { return (x + to - 1) / to * to; }

struct sigaction previous_segv;

void write_all(const char* text) {
  const std::size_t n = std::strlen(text);
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, text, n);
}

// Async-signal-safe enough for a process about to die: names the cause, prints the stack,
// and re-raises with the previous handler so that the exit status is the fault's.
void on_fault(int sig, siginfo_t* info, void* context) {
  if (StrictArena::instance().contains(info->si_addr)) {
    write_all(
        "\n[strict device] host code touched strict device memory. Device memory is not host "
        "memory on an accelerator: read and write it only through Device copies "
        "(Tensor::to_host, copy_from_host, parallel/host_access.h) or kernels. Stack:\n");
    void* frames[48];
    backtrace_symbols_fd(frames, backtrace(frames, 48), STDERR_FILENO);
  }
  sigaction(SIGSEGV, &previous_segv, nullptr);
  if (previous_segv.sa_flags & SA_SIGINFO) {
    if (previous_segv.sa_sigaction != nullptr) previous_segv.sa_sigaction(sig, info, context);
  } else if (previous_segv.sa_handler != SIG_DFL && previous_segv.sa_handler != SIG_IGN) {
    previous_segv.sa_handler(sig);
  }
  // Returning re-executes the faulting access under the restored handler (default: die).
}
}  // namespace

StrictArena& StrictArena::instance() {
  static StrictArena arena;
  return arena;
}

StrictArena::StrictArena() : reserved_(kReservation) {
  void* p = mmap(nullptr, reserved_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  MOERUN_CHECK(p != MAP_FAILED, DeviceError, "[strict device] cannot reserve {} GiB of address space: {}",
               reserved_ >> 30, std::strerror(errno));
  base_ = static_cast<char*>(p);
  struct sigaction action {};
  action.sa_sigaction = on_fault;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  sigaction(SIGSEGV, &action, &previous_segv);
}

bool StrictArena::contains(const void* p) const {
  const auto* c = static_cast<const char*>(p);
  return c >= base_ && c < base_ + reserved_;
}

void StrictArena::protect(std::size_t begin, std::size_t end, bool open) const {
  if (end <= begin) return;
  const int rc = mprotect(base_ + begin, end - begin, open ? PROT_READ | PROT_WRITE : PROT_NONE);
  MOERUN_CHECK(rc == 0, DeviceError, "[strict device] mprotect failed: {}", std::strerror(errno));
}

void* StrictArena::allocate(std::size_t bytes) {
  const std::lock_guard lock(mutex_);
  const std::size_t need = round_up(bytes, kAlign);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < need) continue;
    const std::size_t at = it->first, left = it->second - need;
    free_.erase(it);
    if (left > 0) free_[at + need] = left;
    return base_ + at;
  }
  // Grow: take fresh pages past the high-water mark (a free block at the top joins them).
  std::size_t at = high_water_;
  if (!free_.empty()) {
    const auto last = std::prev(free_.end());
    if (last->first + last->second == high_water_) {
      at = last->first;
      free_.erase(last);
    }
  }
  const std::size_t new_high = round_up(at + need, kPage);
  if (new_high > reserved_) return nullptr;
  if (open_windows_ > 0) protect(high_water_, new_high, true);  // allocated inside a kernel (scratch)
  if (new_high > at + need) free_[at + need] = new_high - (at + need);
  high_water_ = new_high;
  return base_ + at;
}

void StrictArena::deallocate(void* ptr, std::size_t bytes) {
  const std::lock_guard lock(mutex_);
  std::size_t at = static_cast<std::size_t>(static_cast<char*>(ptr) - base_);
  std::size_t size = round_up(bytes, kAlign);
  auto next = free_.lower_bound(at);
  if (next != free_.end() && at + size == next->first) {
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == at) {
      prev->second += size;
      return;
    }
  }
  free_[at] = size;
}

StrictArena::AccessWindow::AccessWindow() {
  StrictArena& a = instance();
  a.mutex_.lock();  // held for the window's life: one worker at a time touches the arena
  if (a.open_windows_++ == 0) a.protect(0, a.high_water_, true);
}

StrictArena::AccessWindow::~AccessWindow() {
  StrictArena& a = instance();
  if (--a.open_windows_ == 0) a.protect(0, a.high_water_, false);
  a.mutex_.unlock();
}

}  // namespace moerun::strict
