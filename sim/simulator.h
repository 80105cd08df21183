// The step simulator: training steps of a config at W ranks on a Hardware, with routing from a
// RoutingSource and the runtime's own adaptive placement in the loop. Each step: routing ->
// step time under the current placements (StepModel) -> the load monitor records what the
// experts processed -> the cost observer takes the step's numbers, as a StepResult, exactly as
// training's Rebalancer does -> every balance.interval steps the planner is asked through
// make_planner_input and its decision applied, its migration charged at the exchange bandwidth.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sim/hardware.h"
#include "sim/routing_source.h"
#include "sim/step_model.h"
#include "train/config.h"
#include "train/memory_plan.h"

namespace moerun::sim {

struct SimOptions {
  int world_size = 1;
  int ranks_per_node = 0;  // 0: the hardware's
  std::int64_t steps = 50;
  RoutingSpec routing;
  std::uint64_t seed = 1;
};

struct SimStep {
  std::int64_t step = 0;
  StepTime time;
  bool rebalanced = false;
  std::string decision;           // the planner's reason, on decision steps
  double predicted_step = 0.0;    // the planner's predicted step seconds after its decision
};

struct SimResult {
  std::vector<SimStep> steps;
  MemoryEstimate memory;                 // per rank under the initial placement
  std::int64_t extra_replica_bytes = 0;  // the most any rank adds for replicas, at the end
  std::int64_t tokens_per_step = 0;
  int rebalances = 0;
  bool hierarchical = false;
  // Seconds: the median step over the second half of the run (steady state), and that plus
  // every migration of the run spread over all its steps; the migrations' share of the latter.
  double median_step = 0.0, mean_step = 0.0, rebalance_share = 0.0;
};

SimResult simulate(const Config& config, const Hardware& hardware, const SimOptions& options);

}  // namespace moerun::sim
