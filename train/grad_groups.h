// Gradient groups: which ranks sum each parameter's gradient, as GradSync buckets. Dense
// parameters over the world; an expert's over its replicas inside the EP group, then over
// its expert-data-parallel group (with train.shard_optimizer, reduce-scattered over the
// latter: ZeRO-1). Rebuilt after every placement change. Also owns the backward hook that
// marks a block's parameters final as soon as its backward is done, so that their buckets'
// reductions overlap the rest of backward.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "parallel/grad_sync.h"
#include "parallel/placement.h"
#include "parallel/topology.h"
#include "train/config.h"

namespace moerun {

class GradientGroups {
 public:
  // From the config: train.shard_optimizer, parallel.bucket_mb, parallel.grad_reduce_dtype
  // (fp32, or bf16 on the wire summed in fp32) and model.n_layers.
  GradientGroups(Topology& topology, const Config& config);
  // Collective over the world (replica groups are split from the EP group on first use).
  // placements: per MoE layer, empty without expert parallelism; moe_blocks: their blocks.
  // The new sync takes the gradients over from the old one's buckets before those are freed.
  void rebuild(ParameterStore& params, const std::vector<int>& moe_blocks, const std::vector<Placement>& placements);
  GradSync& sync() { return *sync_; }
  const GradSync& sync() const { return *sync_; }
  // For Transformer::set_backward_hook: block >= 0 finished its backward; -1: the rest.
  std::function<void(int)> backward_hook();
  // Gradient payload per step reduced in groups inside one node, and in groups spanning nodes.
  std::int64_t bytes_intra_node() const { return bytes_intra_; }
  std::int64_t bytes_inter_node() const { return bytes_inter_; }

 private:
  ProcessGroup* replica_group(const std::vector<int>& ranks);

  Topology& topology_;
  int blocks_;
  bool shard_;
  std::size_t bucket_bytes_;
  DType wire_dtype_;
  std::unique_ptr<GradSync> sync_;
  std::map<std::vector<int>, std::unique_ptr<ProcessGroup>> replica_groups_;  // by EP ranks
  std::vector<std::vector<Parameter*>> params_of_block_;  // [block] parameters of that block
  std::vector<Parameter*> params_outside_blocks_;         // embedding, final norm, LM head
  std::int64_t bytes_intra_ = 0, bytes_inter_ = 0;
};

}  // namespace moerun
