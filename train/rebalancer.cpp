#include "train/rebalancer.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <deque>

#include "parallel/collective_cost.h"
#include "parallel/grad_sync.h"
#include "parallel/planner_record.h"
#include "runtime/trace.h"
#include "train/held_expert_cost.h"

namespace moerun {

namespace {
using Clock = std::chrono::steady_clock;

nlohmann::json placements_json(const std::vector<Placement>& placements) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& p : placements) out.push_back(p.to_json());
  return out;
}
}  // namespace

Rebalancer::Rebalancer(const Config& config, Topology& topology, const LoadMonitor& monitor, RunLog& log, Device& device)
    : config_(config), topology_(topology), monitor_(monitor), log_(log), policy_(config.balance.policy),
      cost_(config.balance.window) {
  if (topology_.ep() > 1 && policy_ != BalancePolicy::None) {  // only the planner uses them
    cost_.set_ep_bandwidth(measure_ep_bandwidth());
    cost_.set_reduce_bandwidth(measure_reduce_bandwidth());
    // Every rank measures at once, as they train; the slowest rank's figure, everywhere.
    const double held = measure_held_expert_seconds(config_, device, config_.micro_batches_per_rank(topology_.world().size()));
    cost_.set_held_expert_seconds(topology_.world().all_reduce_value(held, ReduceOp::Max));
  }
}

double Rebalancer::measure_ep_bandwidth() {
  // Bytes/s of one all-to-all in the EP group at about an MoE layer's message size.
  ProcessGroup& ep = topology_.ep_group();
  const std::int64_t per_peer = 1 << 18;  // floats: 1 MiB to each peer
  const auto p = static_cast<std::size_t>(ep.size());
  std::vector<float> send(p * per_peer, 1.0f), recv(send.size());
  std::vector<std::int64_t> counts(p, per_peer), displs(p);
  for (std::size_t r = 0; r < p; ++r) displs[r] = static_cast<std::int64_t>(r) * per_peer;
  const double seconds = median_collective_seconds(ep, 5, [&] { ep.all_to_all_v(send, counts, displs, recv, counts, displs); });
  const double bw = double(per_peer * 4) * double(p - 1) / std::max(1e-9, seconds);
  return topology_.world().all_reduce_value(bw, ReduceOp::Min);  // every rank plans with the same number
}

double Rebalancer::measure_reduce_bandwidth() {
  // Bytes/s each rank puts on the wire in an all-reduce in the EP group (a ring's 2 (p - 1) / p
  // of the payload), as gradients are reduced (parallel/grad_sync): non-blocking all-reduces
  // of parallel.bucket_mb buckets, at most GradSync::kMaxInFlight in flight, over 64 MiB, more
  // than these CPUs' last-level cache. On a Zen 5 host that read 4.5-4.7 GB/s, where blocking
  // all-reduces of the same buckets read 7 and one hot 4 MiB buffer 10.7.
  ProcessGroup& ep = topology_.ep_group();
  const std::size_t total = std::size_t{16} << 20;  // floats: 64 MiB
  const std::size_t bucket = std::clamp<std::size_t>(static_cast<std::size_t>(config_.parallel.bucket_mb * (1 << 18)), 1 << 10, total);
  std::vector<float> data(total, 1.0f);  // written once: no first-touch page faults in the timing
  const double seconds = median_collective_seconds(ep, 3, [&] {
    std::deque<std::unique_ptr<CommRequest>> in_flight;
    for (std::size_t at = 0; at < total; at += bucket) {
      in_flight.push_back(ep.all_reduce_async(std::span<float>(data.data() + at, std::min(bucket, total - at)), ReduceOp::Sum));
      if (in_flight.size() > GradSync::kMaxInFlight) {
        in_flight.front()->wait();
        in_flight.pop_front();
      }
    }
    for (auto& request : in_flight) request->wait();
  });
  const double bw = ring_all_reduce_wire_bytes(double(total * sizeof(float)), ep.size()) / std::max(1e-9, seconds);
  return topology_.world().all_reduce_value(bw, ReduceOp::Min);
}

void Rebalancer::report_measured(std::int64_t step) {
  const std::optional<ChangeOutcome> o = cost_.take_outcome();
  if (!o) return;
  const double measured = o->measured_after;
  log_.event({{"event", "rebalance_measured"}, {"step", step}, {"decision_step", last_change_step_},
              {"predicted_step_ms", 1000 * o->predicted_after}, {"measured_step_ms", 1000 * measured},
              {"prediction_error", measured > 0 ? (o->predicted_after - measured) / measured : 0.0},
              {"predicted_saving_ms", 1000 * (o->predicted_before - o->predicted_after)},
              {"measured_saving_ms", 1000 * (o->passes_before - o->passes_after)},
              {"step_saving_ms", 1000 * (o->measured_before - measured)}, {"realized", o->realized},
              {"realized_gain", cost_.measurements().realized_gain}});
}

PlannerInput Rebalancer::planner_input(const std::vector<Placement>& current) const {
  return make_planner_input(config_, monitor_, current, cost_.measurements(), cost_.before_last_change(),
                            topology_.node_of_ep_rank());
}

namespace {
// Identical inputs everywhere: rank 0's measured numbers decide, so every rank plans alike.
void broadcast_measurements(ProcessGroup& world, PlannerInput& in) {
  std::vector<double> wire;
  for (const auto& layer : in.loads) wire.insert(wire.end(), layer.begin(), layer.end());
  for (const auto* steps : {&in.recent_loads, &in.earlier_loads})
    for (const auto& step_loads : *steps)
      for (const auto& layer : step_loads) wire.insert(wire.end(), layer.begin(), layer.end());
  wire.insert(wire.end(), {in.cost.seconds_per_copy, in.cost.fixed_seconds, in.cost.bandwidth, in.cost.migration_bandwidth,
                           in.cost.realized_gain, in.cost.reduce_bandwidth, in.cost.seconds_per_held_expert,
                           in.last_change_slowdown});
  world.broadcast(wire, 0);
  std::size_t at = 0;
  for (auto& layer : in.loads)
    for (double& x : layer) x = wire[at++];
  for (auto* steps : {&in.recent_loads, &in.earlier_loads})
    for (auto& step_loads : *steps)
      for (auto& layer : step_loads)
        for (double& x : layer) x = wire[at++];
  in.cost.seconds_per_copy = wire[at++];
  in.cost.fixed_seconds = wire[at++];
  in.cost.bandwidth = wire[at++];
  in.cost.migration_bandwidth = wire[at++];
  in.cost.realized_gain = wire[at++];
  in.cost.reduce_bandwidth = wire[at++];
  in.cost.seconds_per_held_expert = wire[at++];
  in.last_change_slowdown = wire[at++];
}
}  // namespace

bool Rebalancer::after_step(std::int64_t step, const StepResult& last, const std::vector<Placement>& current,
                            const Apply& apply) {
  if (current.empty() || policy_ == BalancePolicy::None) return false;
  cost_.observe(last);
  report_measured(step);
  if (step % config_.balance.interval != 0 || step == config_.train.steps) return false;
  const trace::Scope span("rebalance", "rebalance decision");
  const auto rebalance_start = Clock::now();
  PlannerInput in = planner_input(current);
  broadcast_measurements(topology_.world(), in);
  const PlannerDecision decision = plan_placement(in);
  double migrate_seconds = 0.0;
  if (decision.apply) {
    migrate_seconds = apply(decision.placements);
    if (decision.migrate_bytes > 0) {  // the slowest rank's time, identical everywhere
      const double slowest = topology_.world().all_reduce_value(migrate_seconds, ReduceOp::Max);
      const double achieved = decision.migrate_bytes / std::max(1e-6, slowest);
      cost_.migrated(achieved);
    }
    ++rebalances_;
    cost_.applied(decision, in.current, config_.balance.interval);
    last_change_step_ = step;
  }
  nlohmann::json event = {{"event", "rebalance"}, {"step", step}, {"policy", balance_policy_name(policy_)},
                          {"chosen", balance_policy_name(decision.chosen)}, {"applied", decision.apply},
                          {"reverted", decision.reverted}, {"home", decision.home}, {"last_change_slowdown", in.last_change_slowdown},
                          {"reason", decision.reason}, {"old_placement", placements_json(in.current)},
                          {"new_placement", placements_json(decision.placements)},
                          {"predicted_step_ms_before", 1000 * decision.before.step_seconds},
                          {"predicted_step_ms_after", 1000 * decision.after.step_seconds},
                          {"imbalance_before", decision.before.imbalance}, {"imbalance_after", decision.after.imbalance},
                          {"predicted_replica_reduce_ms", 1000 * decision.after.replica_reduce_seconds},
                          {"realized_gain", in.cost.realized_gain}, {"persistence", decision.persistence},
                          {"bytes_moved", decision.migrate_bytes}, {"predicted_migrate_ms", 1000 * decision.migrate_seconds},
                          {"migrate_ms", 1000 * migrate_seconds},
                          {"rebalance_ms", 1000 * std::chrono::duration<double>(Clock::now() - rebalance_start).count()}};
  if (config_.log.planner_inputs) event["planner_input"] = planner_input_to_json(in);
  log_.event(event);
  if (decision.apply) {
    log_.message(fmt::format("rebalance at step {} ({}): imbalance {:.2f} -> {:.2f} predicted, step {:.1f} -> {:.1f} ms "
                             "predicted, {} moved",
                             step,
                             decision.reverted ? "back: the last change measured slower"
                             : decision.home   ? "home: the static layout beats the fitted placements now"
                                               : balance_policy_name(decision.chosen), decision.before.imbalance,
                             decision.after.imbalance, 1000 * decision.before.step_seconds,
                             1000 * decision.after.step_seconds, human_bytes(decision.migrate_bytes)));
  }
  return decision.apply;
}

}  // namespace moerun
