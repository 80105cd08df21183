// A planner decision's whole input as JSON: the rebalancer writes it into events.jsonl
// (log.planner_inputs), and `moerun-sim replay` reads it back and asks the same planner, so a
// decision taken in a run can be checked (and studied) outside it. Doubles round-trip exactly.
#pragma once

#include <nlohmann/json.hpp>

#include "parallel/planner.h"

namespace moerun {

nlohmann::json planner_input_to_json(const PlannerInput& in);
// A RuntimeError naming the field when one is missing or malformed.
PlannerInput planner_input_from_json(const nlohmann::json& j);

}  // namespace moerun
