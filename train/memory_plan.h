// The memory planner: device bytes per rank for a config and a world size, from the model's
// shapes alone (nothing is allocated, so it answers for any world size). It counts what the
// code keeps: parameters, their gradients (which live in the gradient-sync buckets), the two
// AdamW moments, the bf16 weight copies of mixed precision, the activations one micro-batch saves for its backward pass, the largest
// temporaries on top of them, and the staging buffers communication needs on devices that MPI
// cannot read. docs/memory.md derives each term and compares the estimate with measured peaks.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <string>

#include "train/config.h"

namespace moerun {

struct MemoryEstimate {
  int world_size = 1;
  std::int64_t experts_per_rank = 0;   // expert FFNs held by one rank, per MoE layer
  std::int64_t parameters = 0;         // bytes on one rank: dense parameters and its experts (fp32 masters)
  std::int64_t dense_parameters = 0;   // values: replicated on every rank
  std::int64_t expert_parameters = 0;  // values: this rank's experts, all MoE layers
  std::int64_t compute_copies = 0;     // bf16 copies of the matrices under mixed precision
  DType precision = DType::F32;        // the compute dtype (train.precision)
  std::int64_t gradients = 0;
  std::int64_t optimizer = 0;          // AdamW m and v (this rank's share under ZeRO-1)
  bool shard_optimizer = false;
  std::int64_t activations = 0;        // saved by one micro-batch's forward for its backward
  std::int64_t temporaries = 0;        // the largest transient set on top of them (loss or backward)
  Recompute recompute = Recompute::None;  // train.recompute the two terms above assume
  // activations + temporaries under each train.recompute (none, moe, full), for comparison.
  std::array<std::int64_t, 3> activations_with{};
  std::int64_t communication = 0;      // host staging of gradient buckets and token exchanges
  std::int64_t peak = 0;               // the sum: the device high-water mark expected
  // Routing is data-dependent: the estimate assumes every expert gets its mean share of
  // token-copies. The bound is the peak when the capacity limit is reached on every expert
  // this rank holds (or, dropless, when every copy lands on one rank).
  std::int64_t peak_bound = 0;

  std::int64_t persistent() const { return parameters + compute_copies + gradients + optimizer + communication; }
  nlohmann::json to_json() const;
  // Lines for a terminal: one term per line, MiB.
  std::string table() const;
};

// Every rank holds the same amount under the contiguous initial placement (ep divides experts),
// so one estimate describes each rank. `staged_comm`: the device is not host-accessible and
// MPI works on host copies (see parallel/host_access.h).
MemoryEstimate estimate_memory(const Config& config, int world_size, bool staged_comm);

// runtime.memory_limit as bytes: "0" = none, "24GiB", "512MiB", "80%" of this machine's RAM,
// "auto" (the default) = kAutoMemoryShare of this node's RAM shared by its `ranks_per_node` ranks.
inline constexpr double kAutoMemoryShare = 0.9;
std::int64_t parse_memory_limit(const std::string& text, int ranks_per_node = 1);

// The estimate, checked: throws ConfigError when it exceeds runtime.memory_limit, listing the
// options that would fit (larger parallel.ep, smaller train.micro_batch) with their estimates.
MemoryEstimate checked_memory_estimate(const Config& config, int world_size, bool staged_comm, int ranks_per_node = 1);

}  // namespace moerun
