// The loss-spike guard (train.max_loss_ratio): a step whose loss exceeds that multiple of the
// median of the recent steps' losses is not applied. train.loss_spike = stop ends the run
// before the update (nothing of that state is saved, like the NaN guard); skip drops the
// step's update and goes on. Every rank sees the same global loss, so every rank decides
// alike. Off by default (ratio 0).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>

namespace moerun {

enum class LossSpikeAction { Stop, Skip };

class LossSpikeGuard {
 public:
  static constexpr std::size_t kWindow = 20;   // recent steps whose median is the reference
  static constexpr std::size_t kMinSteps = 5;  // no verdict before this many
  LossSpikeGuard(double max_ratio, LossSpikeAction action) : max_ratio_(max_ratio), action_(action) {}
  // The reason when `loss` at `step` is a spike (and is then not remembered), else nothing.
  std::optional<std::string> check(std::int64_t step, double loss);
  LossSpikeAction action() const { return action_; }

 private:
  double max_ratio_;
  LossSpikeAction action_;
  std::deque<double> recent_;
};

}  // namespace moerun
