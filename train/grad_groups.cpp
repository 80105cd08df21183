#include "train/grad_groups.h"

#include <algorithm>

#include "model/param_names.h"

namespace moerun {

GradientGroups::GradientGroups(Topology& topology, const Config& config)
    : topology_(topology),
      blocks_(static_cast<int>(config.model.n_layers)),
      shard_(config.train.shard_optimizer),
      bucket_bytes_(static_cast<std::size_t>(config.parallel.bucket_mb * 1024 * 1024)),
      wire_dtype_(config.parallel.grad_reduce_dtype) {}

ProcessGroup* GradientGroups::replica_group(const std::vector<int>& ranks) {
  if (ranks.size() < 2) return nullptr;
  auto it = replica_groups_.find(ranks);
  if (it == replica_groups_.end()) {
    // Collective over the EP group: every member calls this for the same rank sets in the
    // same order (placements are identical everywhere); non-members get nullptr.
    const int me = topology_.ep_rank();
    const bool member = std::find(ranks.begin(), ranks.end(), me) != ranks.end();
    it = replica_groups_.emplace(ranks, topology_.ep_group().split(member ? 0 : -1, me, "replicas")).first;
  }
  return it->second.get();
}

void GradientGroups::rebuild(ParameterStore& params, const std::vector<int>& moe_blocks,
                             const std::vector<Placement>& placements) {
  // Gradients become final block by block during backward, last block first.
  params_of_block_.assign(static_cast<std::size_t>(blocks_), {});
  params_outside_blocks_.clear();
  for (Parameter* p : params.all()) {
    const auto block = block_of(p->name);
    (block ? params_of_block_[static_cast<std::size_t>(*block)] : params_outside_blocks_).push_back(p);
  }
  // Within a block, by name: every rank sharing a bucket must lay it out identically, and an
  // expert that arrived by migration was registered later here than on its other holders.
  auto by_name = [](const Parameter* a, const Parameter* b) { return a->name < b->name; };
  for (auto& block : params_of_block_) std::sort(block.begin(), block.end(), by_name);
  std::sort(params_outside_blocks_.begin(), params_outside_blocks_.end(), by_name);
  std::vector<Parameter*> ready_order;
  for (auto it = params_of_block_.rbegin(); it != params_of_block_.rend(); ++it)
    ready_order.insert(ready_order.end(), it->begin(), it->end());
  ready_order.insert(ready_order.end(), params_outside_blocks_.begin(), params_outside_blocks_.end());
  // Replica groups first, in a fixed order, on every rank of the EP group.
  ProcessGroup& world = topology_.world();
  std::map<std::pair<int, int>, ProcessGroup*> replicas_of;  // (block, expert) -> group
  std::map<const ProcessGroup*, bool> spans_nodes = {{&world, topology_.nodes() > 1},
                                                     {&topology_.edp_group(), topology_.edp_spans_nodes()}};
  for (std::size_t i = 0; i < placements.size(); ++i) {
    for (int e = 0; e < placements[i].experts(); ++e) {
      std::vector<int> ranks;
      for (const Replica& r : placements[i].replicas(e)) ranks.push_back(r.rank);
      ProcessGroup* group = replica_group(ranks);
      replicas_of[{moe_blocks[i], e}] = group;
      spans_nodes[group] = topology_.ep_ranks_span_nodes(ranks);
    }
  }
  // The old buckets go first: the device reuses their memory for the new ones.
  sync_.reset();
  sync_ = std::make_unique<GradSync>(
      ready_order,
      [&](const Parameter& p) -> GradSync::Groups {
        // ZeRO-1 partitions each parameter over its data-parallel copies: the world for dense
        // parameters, the expert-data-parallel group for experts (replicas update alike).
        if (p.kind == ParamKind::Dense) return {{&world}, shard_ ? &world : nullptr};
        auto it = replicas_of.find({p.layer, p.expert});
        return {{it == replicas_of.end() ? nullptr : it->second, &topology_.edp_group()},
                shard_ ? &topology_.edp_group() : nullptr};
      },
      bucket_bytes_, wire_dtype_);
  bytes_intra_ = bytes_inter_ = 0;
  for (const auto& [group, bytes] : sync_->payload_per_group()) (spans_nodes[group] ? bytes_inter_ : bytes_intra_) += bytes;
}

std::function<void(int)> GradientGroups::backward_hook() {
  return [this](int block) {
    const auto& done = block >= 0 ? params_of_block_[static_cast<std::size_t>(block)] : params_outside_blocks_;
    for (const Parameter* p : done) sync_->mark_ready(*p);
  };
}

}  // namespace moerun
