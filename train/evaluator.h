// Evaluation: held-out loss, and for the synthetic tasks the exact-match accuracy of greedy
// completion per task. Work is split over the ranks and summed, with the same number of
// forward passes on every rank (the MoE layers' dispatch is collective).
#pragma once

#include <string>
#include <vector>

#include "parallel/process_group.h"
#include "data/synthetic_tasks.h"
#include "model/transformer.h"
#include "train/config.h"

namespace moerun {

struct EvalResult {
  double heldout_loss = 0.0;  // mean cross-entropy over held-out targets, nats per token
  double heldout_bpb = 0.0;   // the same in bits per text byte; 0 when the data's bytes per token are unknown
  std::int64_t heldout_targets = 0;
  std::vector<std::string> tasks;
  std::vector<double> accuracy;  // exact match per task, in [0, 1]
  std::vector<std::int64_t> examples;
};

class Evaluator {
 public:
  Evaluator(const Config& config, Transformer& model, ParameterStore& params, Device& device, ProcessGroup& world);
  // `tasks` may be null (a token file has no tasks: held-out loss only).
  EvalResult run(const DataSource& data, const SyntheticTasks* tasks);

 private:
  std::vector<std::string> greedy_complete(const std::vector<std::string>& prompts, std::int64_t max_new_tokens);

  const Config& config_;
  Transformer& model_;
  ParameterStore& params_;
  Device& device_;
  ProcessGroup& world_;
};

}  // namespace moerun
