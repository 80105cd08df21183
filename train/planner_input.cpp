#include "train/planner_input.h"

#include <algorithm>

namespace moerun {

void CostObserver::observe(const StepResult& last) {
  const double spc = last.kept_copies > 0 ? last.expert_seconds_total / last.kept_copies : 0.0;
  seconds_per_copy_ = seconds_per_copy_ == 0.0 ? spc : (1 - alpha_) * seconds_per_copy_ + alpha_ * spc;
  if (!last.rank_copies.empty()) {  // across-rank regression of expert seconds on copies
    const double n = double(last.rank_copies.size());
    double mx = 0, my = 0;
    for (std::size_t q = 0; q < last.rank_copies.size(); ++q) mx += last.rank_copies[q] / n, my += last.rank_expert_seconds[q] / n;
    double sxy = 0, sxx = 0;
    for (std::size_t q = 0; q < last.rank_copies.size(); ++q) {
      sxy += (last.rank_copies[q] - mx) * (last.rank_expert_seconds[q] - my);
      sxx += (last.rank_copies[q] - mx) * (last.rank_copies[q] - mx);
    }
    cov_copies_seconds_ = (1 - alpha_) * cov_copies_seconds_ + alpha_ * sxy;
    var_copies_ = (1 - alpha_) * var_copies_ + alpha_ * sxx;
  }
  auto average = [&](double& avg, double x) { avg = avg == 0.0 ? x : (1 - alpha_) * avg + alpha_ * x; };
  average(step_seconds_avg_, last.step_ms / 1000);
  average(passes_seconds_avg_, last.passes_ms / 1000);
  if (pending_) {
    pending_->after.push_back(last.step_ms / 1000);
    pending_->passes_after.push_back(last.passes_ms / 1000);
    if (static_cast<int>(pending_->after.size()) >= pending_->steps) {
      ChangeOutcome o = pending_->outcome;
      auto median = [](std::vector<double>& v) {  // sorted in place: pending_ ends here
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      o.measured_after = median(pending_->after);
      o.passes_after = median(pending_->passes_after);
      const double predicted = o.predicted_before - o.predicted_after;
      if (predicted > 0) {
        o.realized = std::clamp((o.passes_before - o.passes_after) / predicted, 0.0, 1.0);
        realized_sum_ += o.realized;
        ++changes_measured_;
        if (o.passes_before > 0) last_change_slowdown_ = std::max(0.0, o.passes_after / o.passes_before - 1.0);
      }
      done_ = o;
      pending_.reset();
    }
  }
}

void CostObserver::applied(const PlannerDecision& decision, std::vector<Placement> replaced, std::int64_t interval) {
  last_change_slowdown_ = 0.0;
  if (decision.reverted) {
    before_last_change_.clear();
    pending_.reset();
    return;
  }
  before_last_change_ = std::move(replaced);
  pending_ = Pending{.outcome = {.predicted_before = decision.before.step_seconds,
                                 .predicted_after = decision.after.step_seconds,
                                 .measured_before = step_seconds_avg_, .passes_before = passes_seconds_avg_},
                     .steps = static_cast<int>(std::clamp<std::int64_t>(interval, 1, 5))};
}

std::optional<ChangeOutcome> CostObserver::take_outcome() {
  std::optional<ChangeOutcome> o = done_;
  done_.reset();
  return o;
}

CostMeasurements CostObserver::measurements() const {
  return {.seconds_per_copy = seconds_per_copy_,
          .marginal_seconds_per_copy = var_copies_ > 0 ? cov_copies_seconds_ / var_copies_ : -1.0,
          .step_seconds = step_seconds_avg_,
          .ep_bandwidth = ep_bandwidth_,
          .reduce_bandwidth = reduce_bandwidth_,
          .held_expert_seconds = held_expert_seconds_,
          .migration_bandwidth = migration_bandwidth_,
          // The model's own claim (all of it) counts as one more measurement: one noisy change
          // cannot switch the planner off, a run of them can.
          .realized_gain = (1.0 + realized_sum_) / (1.0 + changes_measured_),
          .last_change_slowdown = last_change_slowdown_};
}

namespace {
// How far before the recent steps the planner's earlier steps end: half an interval, the
// average age of a placement over the interval it serves.
std::int64_t persistence_gap(const Config& config) { return (config.balance.interval + 1) / 2; }
}  // namespace

std::size_t load_history_steps(const Config& config) {
  return std::max<std::size_t>(64, static_cast<std::size_t>(config.balance.window + persistence_gap(config)));
}

PlannerInput make_planner_input(const Config& config, const LoadMonitor& monitor, const std::vector<Placement>& current,
                                const CostMeasurements& measured, std::vector<Placement> previous,
                                std::vector<int> node_of_rank) {
  PlannerInput in;
  in.loads = monitor.average();
  // The last `window` steps one by one: a placement must help them, not only their average.
  const auto& history = monitor.history();
  const auto recent = static_cast<std::ptrdiff_t>(std::min<std::size_t>(history.size(), static_cast<std::size_t>(config.balance.window)));
  in.recent_loads.assign(history.end() - recent, history.end());
  // As many steps ending half an interval earlier (or as far back as the history reaches): how
  // much of a placement fitted to them still helps the recent steps (the planner's persistence).
  const auto gap = std::min<std::ptrdiff_t>(persistence_gap(config), static_cast<std::ptrdiff_t>(history.size()) - recent);
  if (recent > 0 && gap >= 1) in.earlier_loads.assign(history.end() - recent - gap, history.end() - gap);
  in.current = current;
  in.previous = std::move(previous);
  in.last_change_slowdown = measured.last_change_slowdown;
  in.policy = config.balance.policy;
  in.node_of_rank = std::move(node_of_rank);
  in.threshold = config.balance.threshold;
  in.interval = static_cast<int>(config.balance.interval);
  in.force = config.balance.force;
  in.min_gain = config.balance.min_gain;
  in.max_experts_per_rank = static_cast<int>(config.expert_slots_per_rank());
  const double d = double(config.model.d_model), ff = double(config.model.d_ff);
  const double matrices = config.model.expert_type == ExpertType::SwiGlu ? 3.0 : 2.0;
  // What moving copies between ranks changes is the marginal cost of a copy, not the average:
  // part of each rank's expert time does not shrink with fewer copies (smaller groups run at a
  // lower GFLOP/s). Use the regression slope when the loads were uneven enough to measure it.
  in.cost.seconds_per_copy = measured.marginal_seconds_per_copy >= 0
                                 ? std::clamp(measured.marginal_seconds_per_copy, 0.0, measured.seconds_per_copy)
                                 : measured.seconds_per_copy;
  in.cost.bytes_per_copy = 4.0 * d * sizeof(float);  // dispatch and combine, forward and backward
  in.cost.bandwidth = measured.ep_bandwidth;
  // Migrations cost more than their bytes (allocation, new communicators): use what the
  // previous ones achieved once there is one.
  in.cost.migration_bandwidth = measured.migration_bandwidth > 0 ? measured.migration_bandwidth : measured.ep_bandwidth;
  in.cost.expert_state_bytes = 3.0 * matrices * d * ff * sizeof(float);  // weights and two moments
  in.cost.realized_gain = measured.realized_gain;
  // Every replica beyond the first sums its expert's gradient with the others each step.
  const double grad_wire = config.parallel.grad_reduce_dtype == DType::BF16 ? 2.0 : 4.0;
  in.cost.replica_grad_bytes = matrices * d * ff * grad_wire;
  in.cost.reduce_bandwidth = measured.reduce_bandwidth > 0 ? measured.reduce_bandwidth : measured.ep_bandwidth;
  in.cost.seconds_per_held_expert = measured.held_expert_seconds;
  // Calibrate: the rest of the step is whatever the model does not explain now.
  CostModel probe = in.cost;
  probe.fixed_seconds = 0.0;
  in.cost.fixed_seconds = std::max(0.0, measured.step_seconds - predict(in.loads, current, probe).step_seconds);
  return in;
}

}  // namespace moerun
