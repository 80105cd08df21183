// KernelProfile: wall time and call count per kernel family, filled by the kernel front-ends
// while a profile is attached to the device (Device::set_profile). Off by default. The timer
// synchronizes the device around each call so that asynchronous backends are timed honestly.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace moerun {

class Device;

struct KernelTime {
  std::int64_t calls = 0;
  double seconds = 0.0;
};

class KernelProfile {
 public:
  void add(std::string_view kernel, double seconds);
  const std::map<std::string, KernelTime, std::less<>>& entries() const { return entries_; }
  double total_seconds() const;
  void clear() { entries_.clear(); }

 private:
  std::map<std::string, KernelTime, std::less<>> entries_;
};

// Times one kernel call when the device has a profile attached; free otherwise.
class ScopedKernelTimer {
 public:
  ScopedKernelTimer(Device& device, std::string_view kernel);
  ~ScopedKernelTimer();
  ScopedKernelTimer(const ScopedKernelTimer&) = delete;
  ScopedKernelTimer& operator=(const ScopedKernelTimer&) = delete;

 private:
  Device& device_;
  KernelProfile* profile_;
  std::string_view kernel_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace moerun
