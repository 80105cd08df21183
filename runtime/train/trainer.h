// The training loop: for each optimizer step, every rank runs its share of the global batch
// as micro-batches (forward, loss, backward, gradients accumulated), then gradients are
// checked for NaN/Inf, clipped by global norm, and AdamW updates the parameters. Writes
// metrics.jsonl and the progress line on rank 0, evaluates periodically and at the end.
#pragma once

#include <memory>

#include "parallel/grad_sync.h"
#include "parallel/process_group.h"
#include "parallel/token_dispatcher.h"
#include "parallel/topology.h"
#include "runtime/data/data_source.h"
#include "runtime/data/synthetic_tasks.h"
#include "runtime/model/transformer.h"
#include "runtime/train/config.h"
#include "runtime/train/evaluator.h"
#include "runtime/train/metrics.h"
#include "runtime/train/optimizer.h"

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
  std::int64_t tokens = 0;  // input tokens in the global batch
  double dropped_frac = 0.0;
  std::vector<std::vector<std::int64_t>> expert_counts;  // [moe layer][expert], global
};

struct TrainSummary {
  std::vector<double> losses;  // per step
  EvalResult final_eval;
  double tokens_per_s = 0.0;  // mean over the run after the first step
};

class Trainer {
 public:
  // run_dir empty: no files (tests). Every rank constructs one; rank 0 writes.
  Trainer(const Config& config, ProcessGroup& world, Device& device, const std::string& run_dir);
  ~Trainer();
  TrainSummary run();
  StepResult train_step(std::int64_t step);
  ParameterStore& parameters() { return *params_; }

 private:
  std::unique_ptr<DataSource> make_data() const;
  void check_finite(std::int64_t step, double loss) const;
  void log_eval(std::int64_t step, const EvalResult& r);

  // Gradient norm before clipping: dense gradients are identical on every rank after sync,
  // expert gradients on every rank of their expert-data-parallel group.
  double global_grad_norm() const;

  const Config& config_;
  ProcessGroup& world_;
  Device& device_;
  std::unique_ptr<Topology> topology_;
  std::unique_ptr<ParameterStore> params_;
  std::unique_ptr<TokenDispatcher> dispatcher_;
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<GradSync> grad_sync_;
  std::vector<std::vector<Parameter*>> params_of_block_;  // [block] parameters of layers.<block>.
  std::vector<Parameter*> params_outside_blocks_;         // embedding, final norm, LM head
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<DataSource> data_;
  std::unique_ptr<Evaluator> evaluator_;
  std::unique_ptr<MetricsWriter> metrics_;  // rank 0 with a run directory
  std::unique_ptr<ProgressLine> progress_;  // rank 0
};

}  // namespace moerun
