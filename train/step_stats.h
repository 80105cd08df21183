// The numbers a training step reports, and the one packed all-reduce that makes them global.
// A step's small collectives used to be eight (loss sums, expert time max and all-gather, the
// NaN verdict, the gradient norm, exchange counters, the signal flag); now every per-step
// scalar and count travels in one all-reduce (sums; flags as counts; a per-rank value in its
// own slot of a world-sized vector), after the gradients are final and before the update.
// With the global target count before the forward pass, a step makes two small collectives
// besides gradient sync and token dispatch.
#pragma once

#include <cstdint>
#include <vector>

#include "model/lm_loss.h"
#include "model/moe_layer.h"
#include "parallel/process_group.h"
#include "parallel/token_dispatcher.h"
#include "runtime/device.h"

namespace moerun {

struct StepResult {
  double loss = 0.0;      // mean cross-entropy over the step's counted targets
  double aux_loss = 0.0;  // mean over micro-batches, summed over MoE layers
  double z_loss = 0.0;
  double grad_norm = 0.0;  // before clipping
  double lr = 0.0;
  double step_ms = 0.0;
  // From the step's start through its forward and backward passes and the gradient sync: the
  // part of the step a placement changes (not the update, the checks and the bookkeeping after
  // it). What a placement change's realized saving is measured on.
  double passes_ms = 0.0;
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
  TransferStats device_transfers;  // this rank's host <-> device copies during the step
  // Blockwise static shapes, this rank: blocks its micro-batches filled, and the block places
  // its send buffers have (the worst case); both 0 otherwise.
  std::int64_t blocks_active = 0, blocks_worst_case = 0;
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
  bool stop_requested = false;
  bool update_skipped = false;  // the loss-spike guard dropped this step's update (train.loss_spike = skip)  // a checkpoint signal reached some rank: stop after this step
};

// What this rank adds to its step's global numbers.
struct LocalStepNumbers {
  double ce_sum = 0.0, aux = 0.0, z = 0.0;  // summed over this rank's micro-batches
  double dropped = 0.0, copies = 0.0;       // token-copies dropped by capacity, and all of them
  std::vector<double> routed, kept;         // [moe layer * experts] copies routed, processed
  double expert_seconds = 0.0;              // this rank's expert compute
  double grad_squares = 0.0;  // this rank's share of the squared gradient norm (the world's shares count each element once)
  std::int64_t nonfinite_grads = 0;
  bool signal = false;  // this rank received a checkpoint signal
  DispatchStats a2a;    // this rank's token exchanges in the step
};

// The world's: sums over ranks, except expert_seconds (one slot per world rank).
struct GlobalStepNumbers {
  double ce_sum = 0.0, aux = 0.0, z = 0.0, dropped = 0.0, copies = 0.0;
  std::vector<double> routed, kept;
  std::vector<double> expert_seconds;  // [world rank]
  double grad_squares = 0.0;
  std::int64_t ranks_with_nonfinite_grads = 0;
  bool signal = false;
  std::int64_t a2a_bytes_inter_node = 0, a2a_messages_intra_node = 0, a2a_messages_inter_node = 0;
};

// Collective over `world`: one all-reduce of doubles (counts stay exact below 2^53).
GlobalStepNumbers reduce_step_numbers(ProcessGroup& world, const LocalStepNumbers& local);

// Fills the global parts of `r` from the reduced numbers: losses (per target and per
// micro-batch), drop fraction, per-expert counts, and the expert time of this rank's EP group
// (world ranks [first, first + ep)), summed over the group, its max / mean, and per rank when
// `per_rank` (expert parallelism).
struct StepShape {
  double targets = 1.0;        // counted targets in the global batch
  double micro_batches = 1.0;  // in the global batch
  int dp = 1, ep = 1, ep_group_first_rank = 0;
  std::size_t moe_layers = 0, experts = 0;
};
void fill_global_numbers(const GlobalStepNumbers& g, const StepShape& shape, bool per_rank, StepResult& r);

// This rank's numbers from its step's losses and MoE layers (after the readout's read), and
// its block counts into `r`.
LocalStepNumbers local_step_numbers(const LossSums& losses, const std::vector<MoeStats>& layers, StepResult& r);

}  // namespace moerun
