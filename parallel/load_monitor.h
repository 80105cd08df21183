// LoadMonitor: what the experts were asked to do, step by step. Keeps, per MoE layer and
// expert, an exponential moving average of the token-copies routed to it in one expert-parallel
// group (window `window` steps: alpha = 2 / (window + 1)), and the recent history (for logs and
// checkpoints). The imbalance of a layer under a placement is max rank load / mean rank load,
// rank loads predicted by the placement's routing rule from these averages.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "parallel/placement.h"

namespace moerun {

class LoadMonitor {
 public:
  LoadMonitor(int layers, int experts, int window, std::size_t history = 64);
  // counts[layer][expert]: token-copies routed in one EP group this step.
  void record(const std::vector<std::vector<double>>& counts);
  const std::vector<std::vector<double>>& average() const { return average_; }
  // Restores the average from a checkpoint.
  void set_average(std::vector<std::vector<double>> average) { average_ = std::move(average); }
  const std::deque<std::vector<std::vector<double>>>& history() const { return history_; }
  std::int64_t steps() const { return steps_; }
  // Per layer: max rank load / mean rank load, from this step's counts (`latest`) or the average.
  std::vector<double> imbalance(const std::vector<Placement>& placements, bool latest) const;

 private:
  double alpha_;
  std::size_t keep_;
  std::int64_t steps_ = 0;
  std::vector<std::vector<double>> average_;
  std::deque<std::vector<std::vector<double>>> history_;
};

}  // namespace moerun
