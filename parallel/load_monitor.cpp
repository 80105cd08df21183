#include "parallel/load_monitor.h"

#include <algorithm>
#include <numeric>

#include "parallel/planner.h"

namespace moerun {

LoadMonitor::LoadMonitor(int layers, int experts, int window, std::size_t history)
    : alpha_(2.0 / (std::max(1, window) + 1.0)),
      keep_(history),
      average_(static_cast<std::size_t>(layers), std::vector<double>(static_cast<std::size_t>(experts), 0.0)) {}

void LoadMonitor::record(const std::vector<std::vector<double>>& counts) {
  for (std::size_t l = 0; l < average_.size(); ++l)
    for (std::size_t e = 0; e < average_[l].size(); ++e)
      average_[l][e] = steps_ == 0 ? counts[l][e] : (1.0 - alpha_) * average_[l][e] + alpha_ * counts[l][e];
  history_.push_back(counts);
  if (history_.size() > keep_) history_.pop_front();
  ++steps_;
}

std::vector<double> LoadMonitor::imbalance(const std::vector<Placement>& placements, bool latest) const {
  std::vector<double> out;
  const auto& loads = latest && !history_.empty() ? history_.back() : average_;
  for (std::size_t l = 0; l < placements.size(); ++l) {
    const auto rank = expected_rank_loads(loads[l], placements[l]);
    const double mean = std::accumulate(rank.begin(), rank.end(), 0.0) / double(rank.size());
    out.push_back(mean > 0 ? *std::max_element(rank.begin(), rank.end()) / mean : 1.0);
  }
  return out;
}

}  // namespace moerun
