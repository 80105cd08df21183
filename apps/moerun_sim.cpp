// moerun-sim: training steps at any world size, predicted from a hardware description.
//
//   mpirun -np 2 moerun-sim calibrate --out this-machine.toml      measure this machine
//   moerun-sim run --hardware sim/hardware/trn2.toml --world 64 --set parallel.ep=64
//       --set balance.policy=auto --routing zipf:1.2 --steps 60 [--out DIR]
//   moerun-sim replay RUN_DIR          a run's rebalance decisions, asked of the planner again
//
// `run` takes the same --config and --set as moerun and refuses the same layouts. It prints
// the step time split into its parts and writes, with --out, steps.csv (one row per step) and
// summary.json. The model, its calibration and validation are in docs/scaling.md.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <omp.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "parallel/mpi_group.h"
#include "runtime/device_registry.h"
#include "runtime/error.h"
#include "runtime/human_bytes.h"
#include "sim/calibrate.h"
#include "sim/decision_replay.h"
#include "sim/simulator.h"
#include "train/config.h"

namespace {

using namespace moerun;

int calibrate_main(ProcessGroup& world, const std::string& out, const std::string& name, bool quick,
                   const std::string& inter_node, int threads) {
  omp_set_num_threads(threads);
  std::optional<sim::Hardware> link;
  if (!inter_node.empty()) link = sim::load_hardware(inter_node);
  const auto device = make_device("cpu");
  sim::CalibrateOptions options{.name = name,
                                .description = fmt::format("calibrated by moerun-sim with {} rank(s) of {} thread(s)", world.size(), threads),
                                .quick = quick,
                                .inter_node = link ? &*link : nullptr};
  const sim::Hardware hw = sim::calibrate(*device, world, options);
  if (world.rank() == 0) {
    sim::save_hardware(hw, out);
    fmt::print("moerun-sim calibrate: wrote {} (GEMM fp32 {:.0f}-{:.0f} GFLOP/s, bf16 {:.0f}-{:.0f}; all-to-all {:.1f} us + "
               "{:.2f} GB/s; all-reduce {:.1f} us + {:.2f} GB/s, {:.0f}% hidden behind compute)\n",
               out, *std::min_element(hw.gemm_f32.forward.gflops.begin(), hw.gemm_f32.forward.gflops.end()),
               *std::max_element(hw.gemm_f32.forward.gflops.begin(), hw.gemm_f32.forward.gflops.end()),
               *std::min_element(hw.gemm_bf16.forward.gflops.begin(), hw.gemm_bf16.forward.gflops.end()),
               *std::max_element(hw.gemm_bf16.forward.gflops.begin(), hw.gemm_bf16.forward.gflops.end()), hw.intra_node.all_to_all.alpha_us,
               hw.intra_node.all_to_all.gbps, hw.intra_node.all_reduce.alpha_us, hw.intra_node.all_reduce.gbps,
               100 * hw.allreduce_hidden);
  }
  return 0;
}

nlohmann::json step_json(const sim::SimStep& s) {
  const sim::StepTime& t = s.time;
  return {{"step", s.step},           {"step_ms", 1000 * t.total()},        {"expert_ms", 1000 * t.expert},
          {"dense_ms", 1000 * t.dense}, {"optimizer_ms", 1000 * t.optimizer}, {"a2a_ms", 1000 * t.all_to_all},
          {"allreduce_ms", 1000 * t.allreduce}, {"rebalance_ms", 1000 * t.rebalance}, {"imbalance", t.imbalance},
          {"a2a_bytes", t.a2a_bytes}, {"a2a_bytes_rank0", t.a2a_bytes_rank0}, {"a2a_bytes_inter_node", t.a2a_bytes_inter_node},
          {"a2a_messages_intra_node", t.a2a_messages_intra_node}, {"a2a_messages_inter_node", t.a2a_messages_inter_node},
          {"allreduce_bytes_intra_node", t.allreduce_bytes_intra_node},
          {"allreduce_bytes_inter_node", t.allreduce_bytes_inter_node}, {"rebalanced", s.rebalanced},
          {"decision", s.decision}};
}

int run_main(const std::optional<std::string>& config_file, const std::vector<std::string>& overrides, const std::string& hardware,
             int world, int ranks_per_node, const std::string& routing, std::int64_t steps, std::uint64_t seed, const std::string& out) {
  const Config config = Config::load(config_file, overrides);
  const sim::Hardware hw = sim::load_hardware(hardware);
  // Ranks per node: the option, else parallel.ranks_per_node, else the hardware's.
  if (ranks_per_node <= 0 && config.parallel.ranks_per_node > 0) ranks_per_node = static_cast<int>(config.parallel.ranks_per_node);
  const sim::SimOptions options{.world_size = world, .ranks_per_node = ranks_per_node, .steps = steps,
                                .routing = sim::RoutingSpec::parse(routing), .seed = seed};
  const sim::SimResult r = sim::simulate(config, hw, options);
  // Medians of each part over the second half of the steps.
  auto part = [&](auto get) {
    std::vector<double> v;
    for (std::size_t i = r.steps.size() / 2; i < r.steps.size(); ++i) v.push_back(get(r.steps[i].time));
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  const double expert = part([](const sim::StepTime& t) { return t.expert; });
  const double dense = part([](const sim::StepTime& t) { return t.dense + t.optimizer; });
  const double a2a = part([](const sim::StepTime& t) { return t.all_to_all; });
  const double ar = part([](const sim::StepTime& t) { return t.allreduce; });
  const double imbalance = part([](const sim::StepTime& t) { return t.imbalance; });
  const double peak = double(r.memory.peak + r.extra_replica_bytes);
  fmt::print("moerun-sim: {} ranks (dp {} x ep {}, {} per node{}), {} on {} ({}), routing {}, policy {}\n", world,
             world / config.parallel.ep, config.parallel.ep, ranks_per_node > 0 ? ranks_per_node : hw.ranks_per_node,
             r.hierarchical ? ", hierarchical exchange" : "", config.model.experts == 0 ? "" : fmt::format("{} experts", config.model.experts),
             hw.name, hw.source, options.routing.describe(), balance_policy_name(config.balance.policy));
  fmt::print("  step {:.2f} ms (median, second half), {:.2f} ms with the run's migrations spread over its steps ({:.2f}% of "
             "it), {:.0f} tokens/s\n",
             1000 * r.median_step, 1000 * r.mean_step, 100 * r.rebalance_share, double(r.tokens_per_step) / r.mean_step);
  fmt::print("  expert {:.2f} ms (slowest rank), dense+optimizer {:.2f} ms, all-to-all {:.2f} ms, exposed all-reduce {:.2f} ms; "
             "imbalance {:.3f}; {} rebalance(s); memory per rank {}\n",
             1000 * expert, 1000 * dense, 1000 * a2a, 1000 * ar, imbalance, r.rebalances, human_bytes(peak));
  for (const sim::SimStep& s : r.steps)
    if (!s.decision.empty())
      fmt::print("  step {}: {} ({})\n", s.step, s.rebalanced ? "placement changed" : "placement kept", s.decision);
  if (!out.empty()) {
    std::filesystem::create_directories(out);
    std::ofstream csv(std::filesystem::path(out) / "steps.csv");
    const std::vector<std::string> cols = {"step", "step_ms", "expert_ms", "dense_ms", "optimizer_ms", "a2a_ms", "allreduce_ms",
                                           "rebalance_ms", "imbalance", "a2a_bytes", "a2a_bytes_rank0", "a2a_bytes_inter_node",
                                           "a2a_messages_intra_node", "a2a_messages_inter_node", "rebalanced"};
    csv << fmt::format("{}\n", fmt::join(cols, ","));
    for (const sim::SimStep& s : r.steps) {
      const nlohmann::json j = step_json(s);
      std::vector<std::string> cells;
      for (const auto& c : cols) cells.push_back(j[c].dump());
      csv << fmt::format("{}\n", fmt::join(cells, ","));
    }
    nlohmann::json summary = {{"world_size", world}, {"ep", config.parallel.ep}, {"dp", world / config.parallel.ep},
                              {"ranks_per_node", ranks_per_node > 0 ? ranks_per_node : hw.ranks_per_node},
                              {"hardware", hw.name}, {"hardware_source", hw.source}, {"routing", options.routing.describe()},
                              {"policy", balance_policy_name(config.balance.policy)}, {"steps", steps},
                              {"median_step_ms", 1000 * r.median_step}, {"mean_step_ms", 1000 * r.mean_step},
                              {"rebalance_share", r.rebalance_share}, {"tokens_per_s", double(r.tokens_per_step) / r.mean_step},
                              {"expert_ms", 1000 * expert}, {"dense_ms", 1000 * dense}, {"a2a_ms", 1000 * a2a},
                              {"allreduce_ms", 1000 * ar}, {"imbalance", imbalance}, {"rebalances", r.rebalances},
                              {"hierarchical", r.hierarchical}, {"memory_peak_bytes", peak}, {"config", config.to_json()}};
    std::ofstream(std::filesystem::path(out) / "summary.json") << summary.dump(1) << "\n";
  }
  return 0;
}

// Exit 0 when every replayed decision is the logged one, 1 otherwise.
int replay_main(const std::string& events) {
  const std::vector<sim::ReplayedDecision> decisions = sim::replay_decisions(events);
  int differ = 0;
  fmt::print("{:>6}  {:>9}  {:>7}  {:>24}  {}\n", "step", "chosen", "applied", "predicted ms before/after", "replayed");
  for (const sim::ReplayedDecision& d : decisions) {
    fmt::print("{:>6}  {:>9}  {:>7}  {:>11.3f} / {:>10.3f}  {}\n", d.step, d.logged["chosen"].get<std::string>(),
               d.logged["applied"].get<bool>() ? "yes" : "no", d.logged["predicted_step_ms_before"].get<double>(),
               d.logged["predicted_step_ms_after"].get<double>(), d.same() ? "identical" : "DIFFERS: " + d.replayed.dump());
    differ += d.same() ? 0 : 1;
  }
  fmt::print("moerun-sim replay: {} of {} decisions identical\n", decisions.size() - std::size_t(differ), decisions.size());
  return differ == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moerun-sim: predicted training steps of a config at any world size, from a hardware description"};
  app.require_subcommand(1);
  auto* cal = app.add_subcommand("calibrate", "measure this machine's kernels and MPI (run under mpirun with the ranks of one node)");
  std::string out, name = "this machine", inter_node;
  bool quick = false;
  int threads = 1;
  cal->add_option("--out", out, "hardware file to write (TOML)")->required();
  cal->add_option("--name", name, "what to call the machine");
  cal->add_flag("--quick", quick, "a coarse grid (seconds instead of a minute; tests)");
  cal->add_option("--inter-node", inter_node, "take the inter-node link from this hardware file (one node cannot measure it)")
      ->check(CLI::ExistingFile);
  cal->add_option("--threads", threads, "compute threads per rank, as in training (runtime.threads)")->check(CLI::PositiveNumber);
  auto* run = app.add_subcommand("run", "simulate training steps");
  std::optional<std::string> config_file;
  std::vector<std::string> overrides;
  std::string hardware, routing = "uniform", run_out;
  int world = 1, ranks_per_node = 0;
  std::int64_t steps = 60;
  std::uint64_t seed = 1;
  run->add_option("--config", config_file, "TOML config file (as moerun's)")->check(CLI::ExistingFile);
  run->add_option("--set", overrides, "override a key: --set section.key=value (repeatable)");
  run->add_option("--hardware", hardware, "hardware file (sim/hardware/*.toml, or one calibrate wrote)")->required();
  run->add_option("--world", world, "ranks (dp x parallel.ep)")->check(CLI::PositiveNumber);
  run->add_option("--ranks-per-node", ranks_per_node, "ranks per node (default: parallel.ranks_per_node, else the hardware's)");
  run->add_option("--routing", routing, "uniform, balanced, zipf:S or trace:PATH");
  run->add_option("--steps", steps, "steps to simulate")->check(CLI::PositiveNumber);
  run->add_option("--seed", seed, "seed of the sampled routing");
  run->add_option("--out", run_out, "directory for steps.csv and summary.json");
  auto* replay = app.add_subcommand("replay", "ask the planner again for a run's logged rebalance decisions "
                                              "(the run needs log.planner_inputs = true); exit 1 if any differs");
  std::string events;
  replay->add_option("events", events, "run directory or its events.jsonl")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*cal) {
      MpiEnvironment mpi(&argc, &argv);
      const auto w = mpi.world();
      return calibrate_main(*w, out, name, quick, inter_node, threads);
    }
    if (*replay) return replay_main(events);
    return run_main(config_file, overrides, hardware, world, ranks_per_node, routing, steps, seed, run_out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moerun-sim: %s\n", e.what());
    return 1;
  }
}
