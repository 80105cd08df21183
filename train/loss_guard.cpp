#include "train/loss_guard.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

namespace moerun {

std::optional<std::string> LossSpikeGuard::check(std::int64_t step, double loss) {
  if (max_ratio_ <= 0.0) return std::nullopt;
  if (recent_.size() >= kMinSteps) {
    std::vector<double> sorted(recent_.begin(), recent_.end());
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    if (loss > max_ratio_ * median) {
      return fmt::format("step {}: the loss {:.6g} is {:.3g} times the median {:.6g} of the last {} steps "
                         "(train.max_loss_ratio = {})",
                         step, loss, loss / median, median, recent_.size(), max_ratio_);
    }
  }
  recent_.push_back(loss);
  if (recent_.size() > kWindow) recent_.pop_front();
  return std::nullopt;
}

}  // namespace moerun
