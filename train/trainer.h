// The training loop: for each optimizer step, every rank runs its share of the global batch
// as micro-batches (forward, loss, backward, gradients accumulated), then gradients are summed
// over the copies of each parameter, checked for NaN/Inf, clipped by global norm, and AdamW
// updates the parameters. Every balance.interval steps the rebalancer may re-place experts
// (adaptive expert parallelism); checkpoints, evaluation and the run log happen between steps.
//
// The trainer owns the components and the loop; each concern is a unit of its own: wiring.h
// (dispatchers, data), grad_groups.h (who sums which gradient), step_stats.h (the step's one
// packed all-reduce), expert_store.h (expert state for migrations), checkpoint_state.h (what
// a checkpoint holds), run_log.h (metrics and events), rebalancer.h (the placement decisions).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/data_source.h"
#include "model/transformer.h"
#include "parallel/load_monitor.h"
#include "parallel/token_dispatcher.h"
#include "parallel/topology.h"
#include "train/config.h"
#include "train/evaluator.h"
#include "train/expert_store.h"
#include "train/grad_groups.h"
#include "train/loss_guard.h"
#include "train/memory_plan.h"
#include "train/optimizer.h"
#include "train/rebalancer.h"
#include "train/routing_trace.h"
#include "train/run_log.h"
#include "train/step_stats.h"

namespace moerun {

struct TrainSummary {
  std::vector<double> losses;  // per step
  EvalResult final_eval;
  double tokens_per_s = 0.0;  // mean over the run after the first step
  int rebalances = 0;
  bool stopped_by_signal = false;
};

class Trainer {
 public:
  // run_dir empty: no files (tests). Every rank constructs one; rank 0 writes. The trainer
  // keeps its own copy of the config (its components refer to it).
  Trainer(const Config& config, ProcessGroup& world, Device& device, const std::string& run_dir);
  ~Trainer();
  TrainSummary run();
  StepResult train_step(std::int64_t step);
  // The balance decision that run() makes after every step (a no-op unless ep > 1 and
  // balance.policy != none). Returns true when the placement changed.
  bool maybe_rebalance(std::int64_t step, const StepResult& last);
  // Moves experts (weights and optimizer moments) to a new placement per MoE layer; every
  // rank calls it with the same placements. Public for tests of the invariance. Returns the
  // wall time of the whole change on this rank (migration and rebuilt gradient groups).
  double apply_placements(const std::vector<Placement>& placements);
  // Per MoE layer, as the dispatchers hold them; empty without expert parallelism.
  std::vector<Placement> placements() const;
  ParameterStore& parameters() { return *params_; }
  const AdamW& optimizer() const { return *optimizer_; }
  // Collective. Writes <run-dir>/checkpoints/step_<N>.h5 (atomically) and returns its path.
  std::string save_checkpoint(std::int64_t step);
  // Collective. Loads parameters, optimizer moments, placement and load history from a
  // checkpoint (a file, or a directory: its `latest`), on any world shape; run() continues
  // after the checkpoint's step.
  // config_changes: the keys the resumed run changed ("key: old -> new"), printed and recorded
  // in events.jsonl with the resume.
  void restore(const std::string& dir_or_file, const std::vector<std::string>& config_changes = {});
  std::int64_t start_step() const { return start_step_; }
  // Called by run() after every step (the executable refreshes its run-directory lock).
  void set_step_callback(std::function<void()> callback) { step_callback_ = std::move(callback); }

 private:
  void log_start();
  void log_summary(TrainSummary& summary, double timed_ms, std::int64_t timed_tokens);
  // This rank's part of the squared global gradient norm: each element counted once over the world.
  // Adds this rank's share of the squared gradient norm and its non-finite gradient values
  // to the readout (device values, read with the step's others).
  void add_gradient_health(const std::vector<Placement>& current);
  // The first parameter whose owned gradient rows hold a non-finite value, and how many (host
  // reads, one per parameter: for the error message only).
  std::int64_t first_nonfinite_grad(const Parameter** first) const;
  void check_finite(std::int64_t step, double loss, const GlobalStepNumbers& g) const;
  void write_trace();  // log.trace: <run-dir>/trace/rank_<r>.json
  struct TrainingState state();
  std::vector<std::vector<int>> local_experts() const;  // per MoE layer

  const Config config_;
  ProcessGroup& world_;
  Device& device_;
  std::string run_dir_;
  MemoryEstimate memory_estimate_;  // per rank, for this layout
  std::unique_ptr<Topology> topology_;
  std::unique_ptr<ParameterStore> params_;
  std::vector<std::unique_ptr<TokenDispatcher>> dispatchers_;  // per block; each holds its placement
  std::unique_ptr<Transformer> model_;
  std::vector<int> moe_blocks_;  // block index of each MoE layer
  std::unique_ptr<GradientGroups> grad_groups_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<ExpertStore> expert_store_;
  std::unique_ptr<DataSource> data_;
  std::unique_ptr<Evaluator> evaluator_;
  std::unique_ptr<RunLog> log_;
  std::unique_ptr<LoadMonitor> monitor_;
  std::unique_ptr<Rebalancer> rebalancer_;
  std::unique_ptr<RoutingTraceLog> routing_trace_;  // log.routing_trace; null when off
  std::int64_t start_step_ = 0;  // the last step already done (restore)
  std::int64_t grad_slots_ = 0;  // readout slots: {squared gradient norm share, non-finite count}
  std::optional<StepResult> last_step_;  // the latest train_step's numbers, saved with checkpoints
  std::function<void()> step_callback_;
  LossSpikeGuard loss_guard_;
};

}  // namespace moerun
