// What the placement planner is given: the cost model's measured inputs, kept current step by
// step (CostObserver), and the planner's input built from them, the load monitor and the
// config (make_planner_input). Training's Rebalancer feeds the observer with measured steps;
// the step simulator (sim/) feeds it with simulated ones. Both then ask the same planner with
// the same kind of numbers, so a simulated decision is the one training would make.
#pragma once

#include <optional>
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
  double reduce_bandwidth = 0.0;            // bytes/s on the wire per rank of an all-reduce in the EP group (0: unknown)
  double held_expert_seconds = 0.0;         // per step for each expert a rank holds, whatever its copies
  double migration_bandwidth = 0.0;         // bytes/s past migrations achieved (0: none yet)
  double realized_gain = 1.0;               // share of the predicted saving past changes achieved
  // How much slower the last change made the passes, measured, as a fraction of the passes
  // before it: 0 while it is unmeasured, when it saved, or when it was not expected to save.
  double last_change_slowdown = 0.0;
};

// What a placement change did, measured over the steps after it. The saving is measured on
// the steps' passes (StepResult::passes_ms: forward, backward and gradient sync), the part a
// placement changes: the update after them runs as long whatever the placement, and on a
// shared host its memory-bound phases alone swing a step by more than a change saves.
struct ChangeOutcome {
  double predicted_before = 0.0, predicted_after = 0.0;  // seconds per step, as the planner judged
  double measured_before = 0.0;  // the moving-average step time when the change was made
  double measured_after = 0.0;   // the median step time of the steps after it
  double passes_before = 0.0;    // the same two for the steps' passes
  double passes_after = 0.0;
  double realized = 1.0;         // (passes_before - passes_after) / (predicted saving), in [0, 1]
};

// Moving averages (window w: alpha = 2 / (w + 1)) of what each step reports.
class CostObserver {
 public:
  explicit CostObserver(std::int64_t window) : alpha_(2.0 / (double(window) + 1.0)) {}
  // Expert seconds per copy (the average, and the across-rank regression slope: the marginal
  // cost of one more copy on a rank), and the step time.
  void observe(const StepResult& last);
  void set_ep_bandwidth(double bytes_per_second) { ep_bandwidth_ = bytes_per_second; }
  void set_reduce_bandwidth(double bytes_per_second) { reduce_bandwidth_ = bytes_per_second; }
  void set_held_expert_seconds(double seconds) { held_expert_seconds_ = seconds; }
  // A migration moved its bytes at this rate (slowest rank, everything included).
  void migrated(double bytes_per_second) {
    migration_bandwidth_ = migration_bandwidth_ == 0.0 ? bytes_per_second : 0.5 * (migration_bandwidth_ + bytes_per_second);
  }
  // The planner's decision was applied, replacing `replaced`. A change, predicted to take the
  // step from decision.before to decision.after seconds, is measured: the median passes time
  // of the next min(5, interval) observed steps, against their moving average when the change
  // was made, gives the share of the predicted saving it achieved (clamped to [0, 1]), and by
  // how much it made the passes slower, if it did. realized_gain is the mean of those shares
  // with 1, the model's own claim, counted as one more: a single change measured in step-time
  // noise (10% on a shared machine) cannot switch the planner off; a run of failed changes
  // does. `replaced` is kept as the way back. A way back (decision.reverted) is not measured,
  // and has no way back itself.
  void applied(const PlannerDecision& decision, std::vector<Placement> replaced, std::int64_t interval);
  // The placements the last change replaced (empty: no change yet, or it was reverted).
  const std::vector<Placement>& before_last_change() const { return before_last_change_; }
  // The last change's outcome, once all of its steps are observed (then forgotten).
  std::optional<ChangeOutcome> take_outcome();
  CostMeasurements measurements() const;

 private:
  double alpha_;
  double ep_bandwidth_ = 0.0;
  double reduce_bandwidth_ = 0.0;
  double held_expert_seconds_ = 0.0;
  double seconds_per_copy_ = 0.0;
  double cov_copies_seconds_ = 0.0;  // moving averages of the across-rank covariance of copies and
  double var_copies_ = 0.0;          // expert seconds, and of the variance of copies
  double step_seconds_avg_ = 0.0;
  double passes_seconds_avg_ = 0.0;
  double migration_bandwidth_ = 0.0;
  double realized_sum_ = 0.0;  // of the measured changes' shares
  int changes_measured_ = 0;
  std::vector<Placement> before_last_change_;
  double last_change_slowdown_ = 0.0;
  struct Pending {
    ChangeOutcome outcome;
    int steps = 0;
    std::vector<double> after, passes_after;
  };
  std::optional<Pending> pending_;
  std::optional<ChangeOutcome> done_;
};

// Steps of per-step loads the load monitor must keep for make_planner_input: a window of recent
// steps and one ending half an interval earlier (at least 64, for logs).
std::size_t load_history_steps(const Config& config);

// Loads from the monitor (the average, the last balance.window steps one by one, and as many
// ending half an interval earlier, when the history reaches that far back), the
// policy and gates from the config, and the cost model from the measurements; `fixed_seconds`
// is whatever the model does not explain of the measured step time. `previous` are the
// placements before the last change (CostObserver::before_last_change), the way back when
// that change measured slower.
PlannerInput make_planner_input(const Config& config, const LoadMonitor& monitor, const std::vector<Placement>& current,
                                const CostMeasurements& measured, std::vector<Placement> previous,
                                std::vector<int> node_of_rank);

}  // namespace moerun
