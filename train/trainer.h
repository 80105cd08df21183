// The training loop: for each optimizer step, every rank runs its share of the global batch
// as micro-batches (forward, loss, backward, gradients accumulated), then gradients are summed
// over the copies of each parameter, checked for NaN/Inf, clipped by global norm, and AdamW
// updates the parameters. Every balance.interval steps the planner may re-place experts
// (adaptive expert parallelism) from the load monitor's numbers. Writes metrics.jsonl and
// events.jsonl and the progress line on rank 0, and evaluates periodically and at the end.
#pragma once

#include <map>
#include <memory>

#include "parallel/grad_sync.h"
#include "parallel/load_monitor.h"
#include "parallel/migrator.h"
#include "parallel/planner.h"
#include "parallel/process_group.h"
#include "parallel/token_dispatcher.h"
#include "parallel/topology.h"
#include "data/data_source.h"
#include "data/synthetic_tasks.h"
#include "model/transformer.h"
#include "train/config.h"
#include "train/evaluator.h"
#include "train/memory_plan.h"
#include "train/metrics.h"
#include "train/optimizer.h"

namespace moerun {

struct StepResult {
  double loss = 0.0;      // mean cross-entropy over the step's counted targets
  double aux_loss = 0.0;  // mean over micro-batches, summed over MoE layers
  double z_loss = 0.0;
  double grad_norm = 0.0;  // before clipping
  double lr = 0.0;
  double step_ms = 0.0;
  double a2a_ms = 0.0;        // inside token exchanges (all-to-all, counts included)
  double allreduce_ms = 0.0;  // gradient all-reduce not hidden behind backward
  double compute_ms = 0.0;    // the rest of the step
  std::int64_t a2a_bytes = 0;  // sent by this rank's dispatchers
  std::int64_t a2a_bytes_inter_node = 0;  // of which to ranks on other nodes
  std::int64_t a2a_messages_intra_node = 0, a2a_messages_inter_node = 0;  // non-empty sends
  // The same, summed over every rank of the world: the job's traffic (flat vs hierarchical).
  std::int64_t world_a2a_bytes_inter_node = 0;
  std::int64_t world_a2a_messages_intra_node = 0, world_a2a_messages_inter_node = 0;
  std::int64_t allreduce_bytes_intra_node = 0;  // gradient payload reduced in groups within a node
  std::int64_t allreduce_bytes_inter_node = 0;  // and in groups spanning nodes
  std::int64_t tokens = 0;  // input tokens in the global batch
  double dropped_frac = 0.0;
  std::vector<std::vector<std::int64_t>> expert_counts;  // [moe layer][expert] routed copies, global
  std::vector<std::vector<std::int64_t>> expert_kept;    // [moe layer][expert] processed copies, global
  std::vector<double> imbalance;  // [moe layer] max / mean rank load (processed copies), current placement
  double expert_time_imbalance = 1.0;  // max / mean of the EP group's expert compute time
  double expert_seconds_total = 0.0;   // expert compute summed over the EP group's ranks
  double kept_copies = 0.0;            // token-copies the experts processed in one EP group
  // Per rank of this EP group: expert compute seconds measured, and the copies its experts
  // processed as the placement routes them (for the marginal cost of a copy).
  std::vector<double> rank_expert_seconds;
  std::vector<double> rank_copies;
};

struct TrainSummary {
  std::vector<double> losses;  // per step
  EvalResult final_eval;
  double tokens_per_s = 0.0;  // mean over the run after the first step
  int rebalances = 0;
  bool stopped_by_signal = false;
};

class Trainer : private ExpertStateStore {
 public:
  // run_dir empty: no files (tests). Every rank constructs one; rank 0 writes. The trainer
  // keeps its own copy of the config (its components refer to it).
  Trainer(const Config& config, ProcessGroup& world, Device& device, const std::string& run_dir);
  ~Trainer() override;
  TrainSummary run();
  StepResult train_step(std::int64_t step);
  // The balance decision that run() makes every balance.interval steps (a no-op unless
  // ep > 1 and balance.policy != none). Returns true when the placement changed.
  bool maybe_rebalance(std::int64_t step, const StepResult& last);
  // Moves experts (weights and optimizer moments) to a new placement per MoE layer; every
  // rank calls it with the same placements. Public for tests of the invariance. Returns the
  // wall time of the whole change on this rank (migration and rebuilt gradient groups).
  double apply_placements(const std::vector<Placement>& placements);
  const std::vector<Placement>& placements() const { return placements_; }
  ParameterStore& parameters() { return *params_; }
  const AdamW& optimizer() const { return *optimizer_; }
  // Collective. Writes <run-dir>/checkpoints/step_<N>.h5 (atomically) and returns its path.
  std::string save_checkpoint(std::int64_t step);
  // Collective. Loads parameters, optimizer moments, placement and load history from a
  // checkpoint (a file, or a directory: its `latest`), on any world shape; run() continues
  // after the checkpoint's step.
  void restore(const std::string& dir_or_file);
  std::int64_t start_step() const { return start_step_; }

 private:
  std::unique_ptr<DataSource> make_data() const;
  void check_finite(std::int64_t step, double loss) const;
  void log_eval(std::int64_t step, const EvalResult& r);
  void write_trace();  // log.trace: <run-dir>/trace/rank_<r>.json
  // Gradient norm before clipping: each parameter counted once, whatever its copies.
  double global_grad_norm() const;
  void rebuild_grad_sync();
  ProcessGroup* replica_group(const std::vector<int>& ranks);
  double measure_ep_bandwidth();
  // ExpertStateStore: weights and AdamW moments of one expert here.
  std::vector<Tensor*> expert_tensors(int layer, int expert) override;
  std::vector<Tensor*> create_expert(int layer, int expert) override;
  void drop_expert(int layer, int expert) override;

  const Config config_;
  ProcessGroup& world_;
  Device& device_;
  std::unique_ptr<Topology> topology_;
  std::unique_ptr<ParameterStore> params_;
  std::vector<std::unique_ptr<TokenDispatcher>> dispatchers_;  // per block (one shared when ep = 1)
  std::vector<int> moe_blocks_;                                // block index of each MoE layer
  std::vector<Placement> placements_;                          // per MoE layer (ep > 1)
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<GradSync> grad_sync_;
  std::int64_t allreduce_intra_ = 0, allreduce_inter_ = 0;  // per step, from the buckets' groups
  std::map<std::vector<int>, std::unique_ptr<ProcessGroup>> replica_groups_;
  std::vector<std::vector<Parameter*>> params_of_block_;  // [block] parameters of layers.<block>.
  std::vector<Parameter*> params_outside_blocks_;         // embedding, final norm, LM head
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<DataSource> data_;
  std::unique_ptr<Evaluator> evaluator_;
  std::unique_ptr<MetricsWriter> metrics_;  // rank 0 with a run directory
  std::unique_ptr<ProgressLine> progress_;  // rank 0
  // Adaptive expert parallelism.
  BalancePolicy policy_ = BalancePolicy::None;
  std::unique_ptr<LoadMonitor> monitor_;
  double ep_bandwidth_ = 0.0;       // bytes/s of the EP exchange, measured at start
  double seconds_per_copy_ = 0.0;   // moving average of expert compute per token-copy
  double cov_copies_seconds_ = 0.0;  // moving averages of the across-rank covariance of copies and
  double var_copies_ = 0.0;          // expert seconds, and of the variance of copies: their ratio is
                                     // the marginal cost of one more copy on a rank
  double step_seconds_avg_ = 0.0;   // moving average of the step time
  double migration_bandwidth_ = 0.0;  // bytes/s that past migrations achieved (0: none yet)
  struct PendingCheck {             // a decision whose effect is measured a few steps later
    std::int64_t decision_step = 0;
    double predicted_seconds = 0.0;
    std::vector<double> measured;
  };
  std::optional<PendingCheck> pending_;
  MemoryEstimate memory_estimate_;  // per rank, for this layout
  int rebalances_ = 0;
  std::string run_dir_;
  std::int64_t start_step_ = 0;  // the last step already done (restore)
};

}  // namespace moerun
