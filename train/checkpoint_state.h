// What a training checkpoint holds and how it comes back: parameter values and AdamW moments
// (described tensor by tensor for checkpoint/state_content.h, each rank handing over the
// pieces it writes), the placement, the load monitor's history, and the step and counters.
// The file format itself is checkpoint/'s (docs/checkpoint-format.md).
#pragma once

#include <optional>
#include <vector>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_writer.h"
#include "parallel/grad_sync.h"
#include "parallel/load_monitor.h"
#include "parallel/placement.h"
#include "parallel/topology.h"
#include "train/config.h"
#include "train/optimizer.h"
#include "train/step_stats.h"

namespace moerun {

// The trainer's state, as the checkpoint sees it.
struct TrainingState {
  const Config& config;
  ParameterStore& params;
  AdamW& optimizer;
  const GradSync& grad_sync;
  const Topology& topology;
  const std::vector<int>& moe_blocks;                // block of each MoE layer
  std::vector<Placement> placements;          // per MoE layer; empty without expert parallelism
  std::vector<std::vector<int>> local_experts;  // per MoE layer: experts hosted here
  LoadMonitor& monitor;
};

// The same datasets on every rank (from the model's shape, not from what a rank holds); the
// pieces this rank writes: dense tensors from rank 0, each expert from its first holder in
// the first EP group, and under ZeRO-1 each rank's rows of the moments.
// last: the numbers of the step just trained (loss, learning rate, gradient norm, ...), stored
// for inspection (moerun-ckpt info); null when no step ran since the start or a restore.
ckpt::CheckpointContent checkpoint_content(const TrainingState& state, std::int64_t step, int rebalances,
                                           const StepResult* last = nullptr);

// The saved placement when the file was written with this expert-parallel size and layers.
std::optional<std::vector<Placement>> saved_placements(const ckpt::CheckpointReader& file, int ep, std::size_t layers);
// The values of every parameter in `params` (experts: the rows of the ones it holds) and every
// buffer, from the file's model. Generation loads a model with it.
void load_model_values(const ckpt::CheckpointReader& file, ParameterStore& params, std::int64_t experts);
// Parameters, moments (this rank's rows) and the load monitor, from the file.
void restore_state(const ckpt::CheckpointReader& file, const TrainingState& state);

}  // namespace moerun
