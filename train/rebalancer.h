// The rebalancer: adaptive expert parallelism between steps. It keeps the cost model's
// measured inputs current every step (expert seconds per token-copy as the marginal cost from
// an across-rank regression, the step time, the EP exchange's bandwidth measured at start,
// the bandwidth past migrations achieved), and every balance.interval steps packs the
// planner's inputs (loads from the load monitor, the current placements), broadcasts rank 0's
// numbers so every rank plans alike, asks the planner (parallel/planner.h), and applies its
// decision through the caller's `apply`. Each decision is logged with its prediction, and the
// measured step time a few steps later beside it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "parallel/load_monitor.h"
#include "parallel/planner.h"
#include "parallel/topology.h"
#include "runtime/device.h"
#include "train/config.h"
#include "train/planner_input.h"
#include "train/run_log.h"
#include "train/step_stats.h"

namespace moerun {

class Rebalancer {
 public:
  // Moves experts to new placements (one per MoE layer) on every rank; returns its seconds.
  using Apply = std::function<double(const std::vector<Placement>&)>;
  // Collective over the world when expert-parallel and balancing (measures the EP exchange's
  // bandwidth, that of an all-reduce in the EP group, which sums replicated experts' gradients,
  // and through `device` what one more held expert costs a step: train/held_expert_cost.h).
  Rebalancer(const Config& config, Topology& topology, const LoadMonitor& monitor, RunLog& log, Device& device);
  // Every step, on every rank, with the same arguments. A no-op unless ep > 1 and
  // balance.policy != none. Returns true when the placement changed.
  bool after_step(std::int64_t step, const StepResult& last, const std::vector<Placement>& current, const Apply& apply);
  BalancePolicy policy() const { return policy_; }
  int rebalances() const { return rebalances_; }
  void set_rebalances(int n) { rebalances_ = n; }  // from a checkpoint

 private:
  void report_measured(std::int64_t step);
  PlannerInput planner_input(const std::vector<Placement>& current) const;
  double measure_ep_bandwidth();
  double measure_reduce_bandwidth();

  const Config& config_;
  Topology& topology_;
  const LoadMonitor& monitor_;
  RunLog& log_;
  BalancePolicy policy_ = BalancePolicy::None;
  int rebalances_ = 0;
  CostObserver cost_;                 // the cost model's measured inputs
  std::int64_t last_change_step_ = 0;  // the step of the last applied change (for its measured event)
};

}  // namespace moerun
