#include "train/expert_store.h"

#include <algorithm>
#include <map>

#include "model/feed_forward.h"
#include "model/moe_layer.h"
#include "parallel/grad_sync.h"

namespace moerun {

ExpertStore::ExpertStore(const ModelConfig& model, bool shard_optimizer, ParameterStore& params, AdamW& optimizer,
                         const ProcessGroup& edp)
    : model_(model), shard_(shard_optimizer), params_(params), optimizer_(optimizer), edp_(edp) {}

std::vector<Tensor*> ExpertStore::expert_tensors(int layer, int expert) {
  std::vector<Tensor*> out;
  for (const std::string& name : FeedForwardSet::weight_names(model_, MoeLayer::expert_prefix(layer), expert)) {
    AdamW::Moments& m = optimizer_.moments(name);
    out.insert(out.end(), {&params_.get(name).value, &m.m, &m.v});
  }
  return out;
}

std::vector<Tensor*> ExpertStore::create_expert(int layer, int expert) {
  std::vector<Tensor*> out;
  const auto names = FeedForwardSet::weight_names(model_, MoeLayer::expert_prefix(layer), expert);
  auto shape_of = [&](const std::string& name) { return FeedForwardSet::weight_shape(model_, name); };
  std::vector<std::string> in_bucket_order = names;
  std::sort(in_bucket_order.begin(), in_bucket_order.end());
  std::vector<Shape> shapes;
  for (const std::string& name : in_bucket_order) shapes.push_back(shape_of(name));
  const bool sharded = shard_ && edp_.size() > 1;
  const auto shard = sharded ? GradSync::expert_shard(shapes, edp_.size(), edp_.rank()) : std::vector<RowRange>{};
  std::map<std::string, RowRange> rows;
  for (std::size_t i = 0; i < in_bucket_order.size(); ++i)
    rows[in_bucket_order[i]] = sharded ? shard[i] : RowRange{0, shapes[i][0]};
  for (const std::string& name : names) {
    Parameter& p = params_.add(name, shape_of(name), Init::Zeros, ParamKind::Expert, layer, expert);
    AdamW::Moments& m = optimizer_.add_moments(name, shape_of(name), rows.at(name));
    out.insert(out.end(), {&p.value, &m.m, &m.v});
  }
  return out;
}

void ExpertStore::drop_expert(int layer, int expert) {
  for (const std::string& name : FeedForwardSet::weight_names(model_, MoeLayer::expert_prefix(layer), expert)) {
    params_.remove(name);
    optimizer_.drop_moments(name);
  }
}

void ExpertStore::reserve_arrivals(const std::vector<int>& layers, const std::vector<Placement>& placements,
                                   int ep_rank, int per_layer) {
  std::vector<std::pair<int, int>> created;  // (block, expert)
  for (std::size_t i = 0; i < layers.size(); ++i) {
    int left = per_layer;
    for (int e = 0; e < placements[i].experts() && left > 0; ++e) {
      if (placements[i].holds(ep_rank, e)) continue;
      create_expert(layers[i], e);
      created.emplace_back(layers[i], e);
      --left;
    }
  }
  for (const auto& [layer, expert] : created) drop_expert(layer, expert);
}

}  // namespace moerun
