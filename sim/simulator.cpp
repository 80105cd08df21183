#include "sim/simulator.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "parallel/load_monitor.h"
#include "parallel/planner.h"
#include "train/planner_input.h"

namespace moerun::sim {
namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// What the trainer reports of a step, as far as the planner's cost observer reads it.
StepResult observed(const StepTime& t) {
  StepResult r;
  r.step_ms = 1000 * t.total();
  r.passes_ms = 1000 * (t.total() - t.optimizer);
  r.rank_expert_seconds = t.rank_expert_seconds;
  r.rank_copies = t.rank_copies;
  r.expert_seconds_total = std::accumulate(r.rank_expert_seconds.begin(), r.rank_expert_seconds.end(), 0.0);
  r.kept_copies = std::accumulate(r.rank_copies.begin(), r.rank_copies.end(), 0.0);
  return r;
}

}  // namespace

SimResult simulate(const Config& config, const Hardware& hardware, const SimOptions& options) {
  const int per_node = options.ranks_per_node > 0 ? options.ranks_per_node : hardware.ranks_per_node;
  const StepModel model(config, options.world_size, per_node, hardware);
  RoutingSource routing(options.routing, config, options.world_size, model.moe_layers(), options.seed);
  const int experts = static_cast<int>(config.model.experts);
  std::vector<Placement> placements(static_cast<std::size_t>(model.moe_layers()), Placement::contiguous(experts, model.ep()));
  LoadMonitor monitor(model.moe_layers(), experts, static_cast<int>(config.balance.window), load_history_steps(config));
  CostObserver cost(config.balance.window);
  cost.set_ep_bandwidth(model.exchange_bandwidth());
  cost.set_reduce_bandwidth(model.replica_reduce_bandwidth());
  cost.set_held_expert_seconds(model.held_expert_seconds());
  const bool balancing = model.ep() > 1 && config.balance.policy != BalancePolicy::None;

  SimResult result;
  result.memory = estimate_memory(config, options.world_size, false);
  result.tokens_per_step = config.train.global_batch * config.model.seq_len;
  result.hierarchical = model.hierarchical();
  Routing routed;
  for (std::int64_t step = 1; step <= options.steps; ++step) {
    routing.next(routed);
    SimStep s{.step = step, .time = model.step(routed, placements)};
    monitor.record(s.time.expert_copies);
    if (balancing) cost.observe(observed(s.time));
    // As training decides: after the step, every balance.interval steps, not after the last.
    if (balancing && step % config.balance.interval == 0 && step != options.steps) {
      const PlannerInput in = make_planner_input(config, monitor, placements, cost.measurements(), cost.before_last_change(),
                                                 model.node_of_ep_rank());
      const PlannerDecision d = plan_placement(in);
      s.decision = d.reason;
      s.predicted_step = d.after.step_seconds;
      if (d.apply) {
        // Moving the state: the bytes over the exchange's bandwidth, charged to this step.
        s.time.rebalance = d.migrate_seconds;
        s.rebalanced = true;
        ++result.rebalances;
        if (d.migrate_bytes > 0) cost.migrated(model.exchange_bandwidth());
        cost.applied(d, placements, config.balance.interval);
        placements = d.placements;
      }
    }
    result.steps.push_back(std::move(s));
  }
  // Replicas beyond the initial experts per rank: weights, gradients, moments, compute copies.
  const double expert_values = (config.model.expert_type == ExpertType::SwiGlu ? 3.0 : 2.0) *
                               double(config.model.d_model * config.model.d_ff);
  const double per_expert = expert_values * (4.0 * 4.0 + double(dtype_size(config.model.compute_dtype)));
  std::vector<int> slots(static_cast<std::size_t>(model.ep()), 0);
  for (const Placement& p : placements) {
    const std::vector<int> used = p.slots_used_per_rank();
    for (std::size_t r = 0; r < slots.size(); ++r) slots[r] += used[r] - experts / model.ep();
  }
  const int extra = std::max(0, *std::max_element(slots.begin(), slots.end()));
  result.extra_replica_bytes = static_cast<std::int64_t>(extra * per_expert);
  // The steady step: the median over the second half (the first half is the planner's warm-up).
  // Every migration of the run is then spread over all of its steps.
  std::vector<double> totals;
  for (std::size_t i = result.steps.size() / 2; i < result.steps.size(); ++i)
    totals.push_back(result.steps[i].time.total() - result.steps[i].time.rebalance);
  double rebalance = 0.0;
  for (const SimStep& s : result.steps) rebalance += s.time.rebalance;
  result.median_step = median(totals);
  result.mean_step = result.median_step + rebalance / double(std::max<std::size_t>(1, result.steps.size()));
  result.rebalance_share = result.mean_step > 0 ? (result.mean_step - result.median_step) / result.mean_step : 0.0;
  return result;
}

}  // namespace moerun::sim
