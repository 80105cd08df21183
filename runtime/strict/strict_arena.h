// StrictArena: the strict backend's memory, kept away from host code. One reserved range of
// address space per process; every strict allocation lies in it, and the range is mapped
// PROT_NONE except while the backend itself works on it (a kernel, a copy, a fill: an
// AccessWindow). Host code that dereferences a device pointer faults, and the fault handler
// names the cause ("host code touched strict device memory") before the process dies.
//
// Allocation is first-fit over a free list with coalescing, 64-byte aligned, within the
// reservation (64 GiB of address space, committed by the OS only as pages are touched).
#pragma once

#include <cstddef>
#include <map>
#include <mutex>

namespace moerun::strict {

class StrictArena {
 public:
  static StrictArena& instance();
  void* allocate(std::size_t bytes);  // null when the reservation is exhausted
  void deallocate(void* ptr, std::size_t bytes);
  bool contains(const void* p) const;

  // While at least one window is open, the used part of the arena is readable and writable.
  class AccessWindow {
   public:
    AccessWindow();
    ~AccessWindow();
    AccessWindow(const AccessWindow&) = delete;
    AccessWindow& operator=(const AccessWindow&) = delete;
  };

 private:
  StrictArena();
  void protect(std::size_t begin, std::size_t end, bool open) const;

  char* base_ = nullptr;
  std::size_t reserved_ = 0;
  std::size_t high_water_ = 0;               // bytes of the arena ever handed out (page-rounded)
  std::map<std::size_t, std::size_t> free_;  // offset -> bytes, below high_water_
  int open_windows_ = 0;
  std::recursive_mutex mutex_;
};

}  // namespace moerun::strict
