#include "parallel/planner_record.h"

#include "runtime/error.h"

namespace moerun {

nlohmann::json planner_input_to_json(const PlannerInput& in) {
  nlohmann::json current = nlohmann::json::array();
  for (const Placement& p : in.current) current.push_back(p.to_json());
  nlohmann::json previous = nlohmann::json::array();
  for (const Placement& p : in.previous) previous.push_back(p.to_json());
  const CostModel& c = in.cost;
  return {{"loads", in.loads},
          {"recent_loads", in.recent_loads},
          {"earlier_loads", in.earlier_loads},
          {"current", current},
          {"previous", previous},
          {"last_change_slowdown", in.last_change_slowdown},
          {"ep", in.current.empty() ? 0 : in.current.front().ep_size()},
          {"cost", {{"seconds_per_copy", c.seconds_per_copy}, {"bytes_per_copy", c.bytes_per_copy},
                    {"bandwidth", c.bandwidth}, {"migration_bandwidth", c.migration_bandwidth},
                    {"expert_state_bytes", c.expert_state_bytes}, {"fixed_seconds", c.fixed_seconds},
                    {"realized_gain", c.realized_gain}, {"replica_grad_bytes", c.replica_grad_bytes},
                    {"reduce_bandwidth", c.reduce_bandwidth},
                    {"seconds_per_held_expert", c.seconds_per_held_expert}}},
          {"policy", balance_policy_name(in.policy)},
          {"max_experts_per_rank", in.max_experts_per_rank},
          {"node_of_rank", in.node_of_rank},
          {"threshold", in.threshold},
          {"interval", in.interval},
          {"min_gain", in.min_gain},
          {"force", in.force}};
}

namespace {
const nlohmann::json& field(const nlohmann::json& j, const char* name) {
  MOERUN_CHECK(j.is_object() && j.contains(name), RuntimeError, "[planner input] the field '{}' is missing", name);
  return j.at(name);
}

template <class T>
T get(const nlohmann::json& j, const char* name) {
  try {
    return field(j, name).get<T>();
  } catch (const nlohmann::json::exception& e) {
    MOERUN_THROW(RuntimeError, "[planner input] the field '{}' is malformed: {}", name, e.what());
  }
}

BalancePolicy policy_named(const std::string& name) {
  for (BalancePolicy p : {BalancePolicy::None, BalancePolicy::Migrate, BalancePolicy::Replicate, BalancePolicy::Auto,
                          BalancePolicy::Eplb})
    if (balance_policy_name(p) == name) return p;
  MOERUN_THROW(RuntimeError, "[planner input] unknown policy '{}'", name);
}
}  // namespace

PlannerInput planner_input_from_json(const nlohmann::json& j) {
  PlannerInput in;
  in.loads = get<std::vector<std::vector<double>>>(j, "loads");
  in.recent_loads = get<std::vector<std::vector<std::vector<double>>>>(j, "recent_loads");
  // Optional: records written before the persistence check (2026-12-03) have none, and those
  // planners made no check, which an empty list reproduces.
  if (j.contains("earlier_loads")) in.earlier_loads = get<std::vector<std::vector<std::vector<double>>>>(j, "earlier_loads");
  const int ep = get<int>(j, "ep");
  for (const auto& layer : field(j, "current")) in.current.push_back(Placement::from_json(ep, layer));
  // Optional: records written before the planner could go back (2026-12-04) never did, which
  // no previous placement reproduces.
  if (j.contains("previous")) {
    for (const auto& layer : field(j, "previous")) in.previous.push_back(Placement::from_json(ep, layer));
    in.last_change_slowdown = get<double>(j, "last_change_slowdown");
  }
  const nlohmann::json& c = field(j, "cost");
  in.cost = {.seconds_per_copy = get<double>(c, "seconds_per_copy"), .bytes_per_copy = get<double>(c, "bytes_per_copy"),
             .bandwidth = get<double>(c, "bandwidth"), .migration_bandwidth = get<double>(c, "migration_bandwidth"),
             .expert_state_bytes = get<double>(c, "expert_state_bytes"), .fixed_seconds = get<double>(c, "fixed_seconds"),
             .realized_gain = get<double>(c, "realized_gain")};
  // Optional: records written before replicas' gradient reduction was charged (2026-12-03)
  // have neither, and those planners charged nothing, which a zero reproduces.
  if (c.contains("replica_grad_bytes")) {
    in.cost.replica_grad_bytes = get<double>(c, "replica_grad_bytes");
    in.cost.reduce_bandwidth = get<double>(c, "reduce_bandwidth");
  }
  // Optional: records written before a held expert's fixed work was charged (2026-12-04).
  if (c.contains("seconds_per_held_expert")) in.cost.seconds_per_held_expert = get<double>(c, "seconds_per_held_expert");
  in.policy = policy_named(get<std::string>(j, "policy"));
  in.max_experts_per_rank = get<int>(j, "max_experts_per_rank");
  in.node_of_rank = get<std::vector<int>>(j, "node_of_rank");
  in.threshold = get<double>(j, "threshold");
  in.interval = get<int>(j, "interval");
  in.min_gain = get<double>(j, "min_gain");
  in.force = get<bool>(j, "force");
  MOERUN_CHECK(in.loads.size() == in.current.size(), RuntimeError, "[planner input] loads for {} layers but {} placements",
               in.loads.size(), in.current.size());
  MOERUN_CHECK(in.previous.empty() || in.previous.size() == in.current.size(), RuntimeError,
               "[planner input] {} previous placements for {} layers", in.previous.size(), in.current.size());
  return in;
}

}  // namespace moerun
