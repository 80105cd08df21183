// Replays a run's rebalance decisions: every events.jsonl "rebalance" line that carries its
// planner input (log.planner_inputs) is given to the same planner again, and what it decides is
// set beside what the run logged. The run and the simulator share the planner, so a difference
// means the logged input is incomplete or the planner is not deterministic: either breaks the
// promise that a simulated decision is the one training would make.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moerun::sim {

struct ReplayedDecision {
  long long step = 0;
  nlohmann::json logged;    // chosen, applied, new_placement, predicted_step_ms_before/after
  nlohmann::json replayed;  // the same fields from the planner now
  bool same() const { return logged == replayed; }
};

// events: a run directory or its events.jsonl. A RuntimeError naming the file when it cannot be
// read or holds no rebalance line with a planner input (the run needs log.planner_inputs = true).
std::vector<ReplayedDecision> replay_decisions(const std::string& events);

}  // namespace moerun::sim
