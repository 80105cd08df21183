#include "parallel/collective_cost.h"

#include <algorithm>
#include <chrono>
#include <vector>

namespace moerun {

double median_collective_seconds(ProcessGroup& group, int runs, const std::function<void()>& collective) {
  using Clock = std::chrono::steady_clock;
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    group.barrier();
    const auto t = Clock::now();
    collective();
    times.push_back(std::chrono::duration<double>(Clock::now() - t).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace moerun
