#include "runtime/kernel_profile.h"

#include "runtime/device.h"

namespace moerun {

void KernelProfile::add(std::string_view kernel, double seconds) {
  auto it = entries_.find(kernel);
  if (it == entries_.end()) it = entries_.emplace(std::string(kernel), KernelTime{}).first;
  ++it->second.calls;
  it->second.seconds += seconds;
}

double KernelProfile::total_seconds() const {
  double s = 0.0;
  for (const auto& [name, t] : entries_) s += t.seconds;
  return s;
}

ScopedKernelTimer::ScopedKernelTimer(Device& device, std::string_view kernel)
    : device_(device), profile_(device.profile()), kernel_(kernel) {
  if (profile_ == nullptr) return;
  device_.synchronize();
  start_ = std::chrono::steady_clock::now();
}

ScopedKernelTimer::~ScopedKernelTimer() {
  if (profile_ == nullptr) return;
  device_.synchronize();
  profile_->add(kernel_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
}

}  // namespace moerun
