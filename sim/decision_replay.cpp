#include "sim/decision_replay.h"

#include <filesystem>
#include <fstream>

#include "parallel/planner_record.h"
#include "runtime/error.h"

namespace moerun::sim {

namespace {
// The decision fields a rebalance line logs, as train/rebalancer.cpp writes them.
nlohmann::json decision_fields(const std::string& chosen, bool applied, const nlohmann::json& placements,
                               double before_ms, double after_ms) {
  return {{"chosen", chosen}, {"applied", applied}, {"new_placement", placements},
          {"predicted_step_ms_before", before_ms}, {"predicted_step_ms_after", after_ms}};
}
}  // namespace

std::vector<ReplayedDecision> replay_decisions(const std::string& events) {
  const std::filesystem::path path =
      std::filesystem::is_directory(events) ? std::filesystem::path(events) / "events.jsonl" : std::filesystem::path(events);
  std::ifstream in(path);
  MOERUN_CHECK(in.good(), RuntimeError, "[replay] cannot read {}", path.string());
  std::vector<ReplayedDecision> out;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    nlohmann::json e;
    try {
      e = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& err) {
      MOERUN_THROW(RuntimeError, "[replay] {} line {} is not JSON: {}", path.string(), number, err.what());
    }
    if (e.value("event", "") != "rebalance" || !e.contains("planner_input")) continue;
    ReplayedDecision r;
    r.step = e.at("step").get<long long>();
    r.logged = decision_fields(e.at("chosen").get<std::string>(), e.at("applied").get<bool>(), e.at("new_placement"),
                               e.at("predicted_step_ms_before").get<double>(), e.at("predicted_step_ms_after").get<double>());
    const PlannerDecision d = plan_placement(planner_input_from_json(e.at("planner_input")));
    nlohmann::json placements = nlohmann::json::array();
    for (const Placement& p : d.placements) placements.push_back(p.to_json());
    r.replayed = decision_fields(balance_policy_name(d.chosen), d.apply, placements, 1000 * d.before.step_seconds,
                                 1000 * d.after.step_seconds);
    out.push_back(std::move(r));
  }
  MOERUN_CHECK(!out.empty(), RuntimeError, "[replay] {} has no rebalance line with its planner input: run with --set "
               "log.planner_inputs=true (and a balance.policy other than none)", path.string());
  return out;
}

}  // namespace moerun::sim
