// The placement planner: a pure function from measured expert loads, the current placements
// and a cost model to a new placement per MoE layer, with its predicted effect. No MPI: every
// rank calls it on identical inputs (broadcast from rank 0) and reaches the same decision.
//
// Cost model of one training step:
//   step = fixed + sum over layers of [ max over ranks of ((copies the rank's experts process)
//          x seconds_per_copy + (experts it holds) x seconds_per_held_expert) + max over ranks of (crossing copies it sends or receives)
//          x bytes_per_copy / bandwidth + max over ranks of (bytes it puts on the wire summing
//          its replicated experts' gradients over their replicas) / reduce_bandwidth ]
// What a replica costs every step after it arrives is in two terms: its holder's fixed work
// for one more expert (weights read, gradients written, the optimizer update) and the sum of
// its gradient with the other replicas'. More replicas balance copies better but cost both.
// A new placement is applied when its expected gain over the next `interval` steps (the
// predicted saving x realized_gain, the share past changes achieved, x persistence, below)
// exceeds the one-off cost of moving expert state, (new replicas x expert_state_bytes) /
// migration_bandwidth, and the step time is expected to fall (the predicted saving at the same
// shares) by at least `min_gain` (a fraction): smaller gains are within the step-to-step noise
// of the measurements they come from. A change whose saving is predicted large but expected to
// last a fifth of the interval is noise too: cheap migrations would otherwise let it through.
//
// Loads move from step to step, most while the router is still learning. A placement fitted to
// the moving average can help no single step: when the recent per-step loads are given, a
// candidate is judged by its median gain over those steps (evaluated on each step's own loads),
// so only imbalance that persists is acted on.
//
// And a placement is kept for the interval after it is fitted, while the loads keep moving.
// When the steps before the recent ones are given too (earlier_loads), the planner measures
// how much of a fitted placement's saving outlasts the loads it was fitted to: the placement it
// would have chosen from the earlier steps, judged on the recent ones, against what it promised
// on the earlier ones (or what fitting the recent ones promises, when that is more: a new
// imbalance has not persisted yet). That share (the decision's `persistence`) multiplies the
// expected saving like realized_gain; it needs no change to be applied first, so drifting loads
// (early training, a router that keeps moving its hot experts) stop changes before they cost.
#pragma once

#include <string>
#include <vector>

#include "parallel/placement.h"

namespace moerun {

enum class BalancePolicy { None, Migrate, Replicate, Auto, Eplb };
std::string balance_policy_name(BalancePolicy p);  // none, migrate, replicate, auto, eplb

struct CostModel {
  double seconds_per_copy = 1e-6;    // expert FFN forward + backward of one token-copy
  double bytes_per_copy = 0.0;       // all-to-all bytes a crossing copy costs per step
  double bandwidth = 1e9;            // bytes/s of the expert-parallel exchange
  double migration_bandwidth = 1e9;  // bytes/s of moving expert state, measured on past migrations
  double expert_state_bytes = 0.0;   // weights and AdamW moments of one expert
  double fixed_seconds = 0.0;        // the rest of the step, unaffected by placement
  // The share of their predicted step-time saving that past placement changes achieved when
  // measured (in (0, 1]; 1 before any was measured). Savings are expected at this share:
  // when loads drift, a placement fitted to the last steps helps the next ones less.
  double realized_gain = 1.0;
  // A replicated expert's gradient is summed over its replicas every step: the bytes of one
  // expert's gradient as reduced (0: replicas cost nothing per step), and the bytes/s one rank
  // puts on the wire in an all-reduce within the EP group.
  double replica_grad_bytes = 0.0;
  double reduce_bandwidth = 1e9;
  // Seconds a rank spends every step on each expert it holds, whatever its copies: weights
  // read and gradients written in every micro-batch, and its optimizer update (0: nothing).
  double seconds_per_held_expert = 0.0;
};

struct Prediction {
  double step_seconds = 0.0;
  double imbalance = 1.0;            // max over layers of (max rank load / mean rank load)
  std::vector<double> layer_imbalance;
  double crossing_copies = 0.0;      // per rank per step, all layers
  double replica_reduce_seconds = 0.0;  // summing replicated experts' gradients, all layers
};

struct PlannerInput {
  std::vector<std::vector<double>> loads;  // [layer][expert] token-copies per step in one EP group
  std::vector<Placement> current;          // [layer]
  // [layer] the placements before the last change (empty: none, or it was already reverted),
  // and how much slower that change made the passes, measured, as a fraction of the passes
  // before it. Beyond min_gain (the measurement noise the planner allows itself) the planner
  // goes back: the measurement outranks the model that predicted a saving.
  std::vector<Placement> previous;
  double last_change_slowdown = 0.0;
  // [step][layer][expert]: the loads of the last steps, one by one (empty: judge on `loads`).
  std::vector<std::vector<std::vector<double>>> recent_loads;
  // [step][layer][expert]: as many steps, ending about half an interval before the recent ones
  // (empty: no persistence check, the saving is expected to last).
  std::vector<std::vector<std::vector<double>>> earlier_loads;
  CostModel cost;
  BalancePolicy policy = BalancePolicy::Auto;
  int max_experts_per_rank = 0;  // expert slots per rank (replicas included)
  std::vector<int> node_of_rank;  // [ep_rank] its node, for eplb (empty: one node)
  double threshold = 1.1;        // act only when the current imbalance exceeds this
  int interval = 50;             // steps the new placement is expected to last
  double min_gain = 0.05;        // minimum expected relative step-time gain (predicted x realized_gain x persistence)
  bool force = false;            // apply any different placement, whatever the predicted gain
};

struct PlannerDecision {
  bool apply = false;
  bool reverted = false;  // back to PlannerInput::previous: the last change measured slower
  // The candidate is the static layout (Placement::contiguous): judged on the recent steps it
  // beats both the current placement and the best fitted one, with no persistence discount
  // (fitted to no loads). The change is measured, with a way back, like any other.
  bool home = false;
  BalancePolicy chosen = BalancePolicy::None;
  std::vector<Placement> placements;  // the new placements when apply, else the current ones
  Prediction before, after;
  double migrate_bytes = 0.0;    // per EP group
  double migrate_seconds = 0.0;
  double gain_seconds = 0.0;     // (before - after) x interval x cost.realized_gain x persistence
  // The share of a fitted placement's saving that outlasted the loads it was fitted to, in
  // [0, 1] (1 without earlier_loads). Computed only past the threshold gate.
  double persistence = 1.0;
  std::string reason;
};

// Expected copies each rank processes for one layer, sources contributing loads / ep each.
std::vector<double> expected_rank_loads(const std::vector<double>& loads, const Placement& placement);
// Bytes each EP rank puts on the wire per step summing the gradients of its replicated experts
// over their replicas: a ring all-reduce, 2 (k - 1) / k x `grad_bytes` for an expert with k
// replicas, one after another for the experts a rank holds.
std::vector<double> replica_reduce_wire_bytes(const Placement& placement, double grad_bytes);
Prediction predict(const std::vector<std::vector<double>>& loads, const std::vector<Placement>& placements,
                   const CostModel& cost);
// Bytes of expert state that must move from `from` to `to` in one EP group.
double migration_bytes(const std::vector<Placement>& from, const std::vector<Placement>& to, const CostModel& cost);

// Indices of `weights`, heaviest first (ties: lower index first).
std::vector<int> heaviest_first(const std::vector<double>& weights);

// Candidate placements for one layer.
Placement plan_migrate(const std::vector<double>& loads, const Placement& current);
Placement plan_replicate(const std::vector<double>& loads, const Placement& current, int max_experts_per_rank);
// The current placement changed a few replicas at a time (incremental_placements), stopped
// where the saving over `saving_steps` steps (the interval x the share of the prediction
// expected to be realized), less the migration time of what moved, is largest:
// few bytes, for large groups where re-packing every expert moves more state than it repays.
// (Even when no stopping point pays: the gates then say so. The current placement when no
// change lowers the busiest rank.)
Placement plan_incremental(const std::vector<double>& loads, const Placement& current, int max_experts_per_rank,
                           const CostModel& cost, double saving_steps);

PlannerDecision plan_placement(const PlannerInput& input);

}  // namespace moerun
