// What the placement planner is given: the cost model's measured inputs, kept current step by
// step (CostObserver), and the planner's input built from them, the load monitor and the
// config (make_planner_input). Training's Rebalancer feeds the observer with measured steps;
// the step simulator (sim/) feeds it with simulated ones. Both then ask the same planner with
// the same kind of numbers, so a simulated decision is the one training would make.
#pragma once

#include <vector>

#include "parallel/load_monitor.h"
#include "parallel/planner.h"
#include "train/config.h"
#include "train/step_stats.h"

namespace moerun {

struct CostMeasurements {
  double seconds_per_copy = 0.0;            // average expert seconds per token-copy
  double marginal_seconds_per_copy = -1.0;  // slope of expert seconds against copies across ranks (< 0: unknown)
  double step_seconds = 0.0;                // the recent step time
  double ep_bandwidth = 0.0;                // bytes/s of the EP exchange
  double migration_bandwidth = 0.0;         // bytes/s past migrations achieved (0: none yet)
};

// Moving averages (window w: alpha = 2 / (w + 1)) of what each step reports.
class CostObserver {
 public:
  explicit CostObserver(std::int64_t window) : alpha_(2.0 / (double(window) + 1.0)) {}
  // Expert seconds per copy (the average, and the across-rank regression slope: the marginal
  // cost of one more copy on a rank), and the step time.
  void observe(const StepResult& last);
  void set_ep_bandwidth(double bytes_per_second) { ep_bandwidth_ = bytes_per_second; }
  // A migration moved its bytes at this rate (slowest rank, everything included).
  void migrated(double bytes_per_second) {
    migration_bandwidth_ = migration_bandwidth_ == 0.0 ? bytes_per_second : 0.5 * (migration_bandwidth_ + bytes_per_second);
  }
  CostMeasurements measurements() const;

 private:
  double alpha_;
  double ep_bandwidth_ = 0.0;
  double seconds_per_copy_ = 0.0;
  double cov_copies_seconds_ = 0.0;  // moving averages of the across-rank covariance of copies and
  double var_copies_ = 0.0;          // expert seconds, and of the variance of copies
  double step_seconds_avg_ = 0.0;
  double migration_bandwidth_ = 0.0;
};

// Loads from the monitor (the average, and the last balance.window steps one by one), the
// policy and gates from the config, and the cost model from the measurements; `fixed_seconds`
// is whatever the model does not explain of the measured step time.
PlannerInput make_planner_input(const Config& config, const LoadMonitor& monitor, const std::vector<Placement>& current,
                                const CostMeasurements& measured, std::vector<int> node_of_rank);

}  // namespace moerun
