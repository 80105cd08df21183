// StepModel: the time of one training step of a config at a world of W ranks on a Hardware,
// given where the step's token-copies are routed and where the experts are placed.
//
//   step = micro-batches x [ dense compute + sum over MoE layers ( slowest rank's experts
//          + 4 token exchanges (dispatch and combine, forward and backward) ) ]
//        + optimizer + exposed gradient all-reduce + small per-step collectives
//
// Every MoE layer synchronizes its expert-parallel group twice per pass, so a layer costs the
// slowest rank's expert time, and every rank waits for it. Expert time is the sum over the
// experts a rank holds of their FFN GEMMs at their own row counts: small groups run at the
// lower rate the hardware's table gives them, which is why balanced routing gains more than
// balanced copy counts. Dense compute is the same on every rank. Exchanges are alpha-beta per
// rank (bytes to this node and to other nodes), the slowest rank's send or receive, flat or
// through node leaders as the runtime would choose (use_hierarchical_exchange). Routing and
// placement go through the runtime's Placement rule. docs/scaling.md derives every term.
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/placement.h"
#include "sim/hardware.h"
#include "train/config.h"

namespace moerun::sim {

// [moe layer][world rank][expert]: token-copies each rank routed this step, before capacity.
using Routing = std::vector<std::vector<std::vector<double>>>;

struct StepTime {
  double expert = 0.0;       // slowest rank's expert FFNs per layer, summed (seconds)
  double dense = 0.0;        // attention, norms, router, dense and shared FFNs, embedding, LM head, loss
  double optimizer = 0.0;    // AdamW, gradient norm, zeroing
  double all_to_all = 0.0;   // token exchanges, counts included
  double allreduce = 0.0;    // gradient all-reduce not hidden behind backward, and the small collectives
  double rebalance = 0.0;    // moving expert state, when this step changed the placement
  double imbalance = 1.0;    // max over layers of (max rank copies / mean rank copies)
  double a2a_bytes = 0.0;               // per step, summed over the world's ranks: payload to other ranks
  double a2a_bytes_inter_node = 0.0;    // of which to other nodes
  double a2a_bytes_rank0 = 0.0;         // what world rank 0 sent (its metrics line reports this)
  double a2a_messages_intra_node = 0.0, a2a_messages_inter_node = 0.0;  // non-empty sends, world
  double allreduce_bytes_intra_node = 0.0, allreduce_bytes_inter_node = 0.0;  // per rank, on the wire
  // The first EP group's ranks: expert seconds and processed copies, all layers (what the
  // runtime's cost observer reads).
  std::vector<double> rank_expert_seconds, rank_copies;
  // [moe layer][expert]: copies the experts processed in one EP group (the mean over groups),
  // what the load monitor records.
  std::vector<std::vector<double>> expert_copies;
  double total() const { return expert + dense + optimizer + all_to_all + allreduce + rebalance; }
};

class StepModel {
 public:
  StepModel(const Config& config, int world_size, int ranks_per_node, const Hardware& hardware);
  StepTime step(const Routing& routed, const std::vector<Placement>& placements) const;
  // FFN forward and backward of one expert on `rows` token-copies (the planner's cost of a copy).
  double expert_seconds(double rows) const;
  int moe_layers() const { return moe_layers_; }
  int world_size() const { return world_; }
  int ep() const { return ep_; }
  const std::vector<int>& node_of_ep_rank() const { return node_of_ep_rank_; }
  bool hierarchical() const { return hierarchical_; }
  double exchange_bandwidth() const;  // bytes/s of the EP group's exchange, for the planner
  double replica_reduce_bandwidth() const;  // bytes/s on the wire of an all-reduce in the EP group, for the planner
  // Seconds a step costs a rank for each expert it holds, whatever its copies (the planner's
  // seconds_per_held_expert): every micro-batch's FFN at one row, and the expert's optimizer update.
  double held_expert_seconds() const;
  double dense_seconds() const { return dense_; }
  double optimizer_seconds() const { return optimizer_; }
  double allreduce_seconds() const { return allreduce_; }

 private:
  double ffn_seconds(double rows, double width, bool recompute_hidden) const;
  double elementwise(double bytes) const;
  struct Exchange {
    double seconds = 0.0, bytes = 0.0, bytes_inter = 0.0, messages_intra = 0.0, messages_inter = 0.0, rank0_bytes = 0.0;
    double rank0_bytes_back = 0.0;  // what rank 0 sends when the same rows go back
  };
  // One all-to-all of rows_to[src * ep + dst] rows over the EP group (and, by symmetry, the
  // one sending them back).
  Exchange exchange(const std::vector<double>& rows_to) const;

  const Config& config_;
  const Hardware& hw_;
  int world_, ep_, dp_, ranks_per_node_, moe_layers_ = 0;
  std::int64_t micro_batches_ = 1, tokens_ = 0;  // per rank per step; tokens per micro-batch
  double row_bytes_ = 0.0;                       // one token-copy on the wire
  std::vector<int> node_of_ep_rank_;
  bool hierarchical_ = false;
  double dense_ = 0.0, optimizer_ = 0.0, allreduce_ = 0.0, allreduce_intra_bytes_ = 0.0, allreduce_inter_bytes_ = 0.0;
  double expert_grad_bytes_ = 0.0;  // one expert's gradients on the wire
  double expert_update_ = 0.0;      // seconds of one expert's optimizer update, gradient norm and zeroing
  std::int64_t experts_per_rank_ = 0;  // held before any replica: the optimizer_ term covers these
};

}  // namespace moerun::sim
