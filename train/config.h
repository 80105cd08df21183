// The resolved configuration of a run: every key with its default, loaded from a TOML file,
// overridden by --set section.key=value, and validated with messages that name the key and
// the allowed values. One table of keys (config.cpp) drives parsing, overrides, the JSON
// written to the run directory and the reference printed by `moerun --config-reference`.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "parallel/planner.h"
#include "train/loss_guard.h"

namespace moerun {

struct TrainConfig {
  std::int64_t steps = 1500;
  std::int64_t global_batch = 32;  // sequences per optimizer step, whatever the world size
  std::int64_t micro_batch = 16;   // sequences per rank per forward pass
  double lr = 3e-3;
  double min_lr_ratio = 0.1;  // cosine decay ends at lr * min_lr_ratio
  std::int64_t warmup_steps = 20;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double epsilon = 1e-8;
  double grad_clip = 1.0;  // global gradient norm limit; 0 disables
  std::int64_t seed = 1234;
  Recompute recompute = Recompute::None;  // none, moe, full: activations dropped in forward, recomputed in backward
  bool shard_optimizer = false;    // ZeRO-1: AdamW moments and updates partitioned over data-parallel copies
  double max_loss_ratio = 0.0;     // loss-spike guard: a loss above this multiple of the recent median; 0 = off
  LossSpikeAction loss_spike = LossSpikeAction::Stop;  // what the guard does: stop, or skip the step's update
};

struct DataConfig {
  std::string source = "synthetic";  // "synthetic" or a file path
  std::string format = "auto";       // token files: auto, text, u16, u32
  double skew = 0.0;                 // synthetic domain skew (0 = uniform)
  std::vector<std::string> tasks = {"add", "reverse", "sort", "brackets"};
  std::int64_t digits = 2;  // addition operands have at most this many digits
  double valid_fraction = 0.05;  // token files: the last part held out for the validation loss
  std::string valid_source;      // a separate held-out token file (then data.source trains only)
};

struct EvalConfig {
  std::int64_t every = 500;     // steps between evaluations (0 = only at the end)
  std::int64_t examples = 64;   // exact-match examples per task
  std::int64_t heldout_batches = 4;  // micro-batches of held-out loss
};

// parallel.all_to_all: how token-copies travel between the ranks of an EP group.
enum class ExchangeRoute { Auto, Flat, Hierarchical };

struct ParallelConfig {
  std::int64_t ep = 1;         // expert-parallel group size; dp = world / ep
  double bucket_mb = 4.0;      // gradient all-reduce bucket size
  std::int64_t ranks_per_node = 0;  // 0 = detect; n = consecutive blocks of n ranks count as nodes
  ExchangeRoute all_to_all = ExchangeRoute::Auto;  // flat, hierarchical (through node leaders), auto (hierarchical for small messages across nodes)
  DType grad_reduce_dtype = DType::F32;  // gradient all-reduce on the wire: fp32, or bf16 (sums in fp32)
  double leader_exchange_kib = 32.0;     // auto: node leaders only for flat messages up to this size
};

struct BalanceConfig {
  BalancePolicy policy = BalancePolicy::None;  // none, migrate, replicate, auto, eplb
  std::int64_t interval = 50;    // steps between decisions
  double threshold = 1.1;        // act only when the load imbalance exceeds this
  double min_gain = 0.05;        // act only for an expected step-time gain of at least this fraction
  std::int64_t max_experts_per_rank = 0;  // expert slots per rank, replicas included; 0 = experts / ep + 1
  std::int64_t window = 10;      // moving-average window of the load monitor (steps)
  bool force = false;            // apply every different placement, whatever the predicted gain (tests, studies)
};

struct CheckpointConfig {
  std::int64_t every = 0;  // steps between checkpoints; 0 = only at the end and on SIGTERM/SIGUSR1
  std::int64_t keep = 3;   // newest checkpoints kept
  bool at_end = true;      // write one when the run ends (benchmarks and sweeps turn it off)
};

struct LogConfig {
  std::int64_t every = 10;         // steps between progress lines when not redrawing
  std::string progress = "auto";   // auto, redraw, lines
  bool trace = false;              // per-rank Chrome trace in <run-dir>/trace/
  bool routing_trace = false;      // routed counts per step, layer, source rank and expert in <run-dir>/routing/
  bool planner_inputs = false;     // each rebalance decision's whole planner input in events.jsonl
};

struct RuntimeConfig {
  std::string device = "cpu";  // backend by name (runtime/device_registry.h)
  double collective_timeout = 120.0;  // seconds without progress in a collective before the job ends; 0 = off
  std::int64_t threads = 0;  // compute threads per rank; 0 = cores / ranks on the node
  std::string memory_limit = "auto";  // per-rank device bytes a layout may use: "24GiB", "80%", "auto" (node RAM / ranks); "0" = no limit
};

struct Config {
  ModelConfig model;
  TrainConfig train;
  DataConfig data;
  EvalConfig eval;
  ParallelConfig parallel;
  BalanceConfig balance;
  CheckpointConfig checkpoint;
  LogConfig log;
  RuntimeConfig runtime;

  // Defaults, then the TOML file (if any), then each "section.key=value" override in order.
  static Config load(const std::optional<std::string>& file, const std::vector<std::string>& overrides);
  // A resumed run: the checkpoint's stored config (to_json), then the file and overrides. Keys
  // that define the model's tensors may not change (ConfigError naming the key and both
  // values); every other change is appended to `changes` as "key: old -> new".
  static Config resume(const nlohmann::json& stored, const std::optional<std::string>& file,
                       const std::vector<std::string>& overrides, std::vector<std::string>& changes);
  // Rules that need the world size: batch divisibility, expert-parallel shape.
  void validate(int world_size) const;
  nlohmann::json to_json() const;
  // Settings that are allowed but easy to misread (a key without effect in this combination, a
  // benchmark setting that changes the math): one sentence each, for the run's log.
  std::vector<std::string> notes() const;
  // Markdown table of every key: name, type, default, meaning.
  static std::string reference_markdown();

  // Expert-data-parallel degree: copies of each expert (dense parameters have world_size copies).
  std::int64_t dp(int world_size) const { return world_size / parallel.ep; }
  // Every rank reads its own share of the global batch, so the batch splits over all ranks.
  std::int64_t micro_batches_per_step() const { return train.global_batch / train.micro_batch; }
  std::int64_t micro_batches_per_rank(int world_size) const { return micro_batches_per_step() / world_size; }
  // Expert slots per rank, replicas included: balance.max_experts_per_rank, or by default one
  // spare slot over experts / ep (none under moe.shapes = static, so that every rank always
  // holds the same number of experts and the expert shapes never change).
  std::int64_t expert_slots_per_rank() const {
    if (balance.max_experts_per_rank > 0) return balance.max_experts_per_rank;
    return (model.experts + parallel.ep - 1) / parallel.ep + (model.static_shapes() ? 0 : 1);
  }
};

}  // namespace moerun
