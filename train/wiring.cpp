#include "train/wiring.h"

#include <algorithm>
#include <map>

#include "data/synthetic_tasks.h"
#include "data/token_file.h"
#include "parallel/all_to_all_dispatcher.h"
#include "runtime/vocab.h"

namespace moerun {

double flat_exchange_message_bytes(const Config& config) {
  const ModelConfig& m = config.model;
  const double copies = double(config.train.micro_batch * m.seq_len * m.top_k);
  return copies / double(std::max<std::int64_t>(1, config.parallel.ep)) * double(m.d_model) * double(dtype_size(m.compute_dtype));
}

bool use_hierarchical_exchange(const Config& config, const std::vector<int>& node_of_ep_rank) {
  const ExchangeRoute route = config.parallel.all_to_all;
  if (route != ExchangeRoute::Auto) return route == ExchangeRoute::Hierarchical;
  std::map<int, int> ranks_on_node;
  for (int n : node_of_ep_rank) ++ranks_on_node[n];
  return ranks_on_node.size() > 1 &&
         std::any_of(ranks_on_node.begin(), ranks_on_node.end(), [](const auto& kv) { return kv.second > 1; }) &&
         flat_exchange_message_bytes(config) <= 1024.0 * config.parallel.leader_exchange_kib;
}

std::vector<std::unique_ptr<TokenDispatcher>> make_dispatchers(const Config& config, const Topology& topology) {
  const int experts = static_cast<int>(config.model.experts);
  std::vector<std::unique_ptr<TokenDispatcher>> out;
  const bool hierarchical = use_hierarchical_exchange(config, topology.node_of_ep_rank());
  for (int block = 0; block < config.model.n_layers; ++block) {  // each MoE layer gets its own placement
    if (topology.ep() == 1) {
      out.push_back(std::make_unique<LocalTokenDispatcher>(experts));
      continue;
    }
    auto dispatcher = std::make_unique<AllToAllDispatcher>(topology.ep_group(), Placement::contiguous(experts, topology.ep()));
    dispatcher->set_nodes(topology.node_of_ep_rank(), hierarchical);
    if (config.model.static_shapes()) dispatcher->set_static_slots(static_cast<int>(config.expert_slots_per_rank()));
    out.push_back(std::move(dispatcher));
  }
  return out;
}

std::unique_ptr<DataSource> make_data(const Config& config) {
  const auto seed = static_cast<std::uint64_t>(config.train.seed);
  if (config.data.source == "synthetic") {
    SyntheticTaskOptions o;
    o.tasks = config.data.tasks;
    o.skew = config.data.skew;
    o.digits = static_cast<int>(config.data.digits);
    o.seed = seed;
    o.seq_len = config.model.seq_len;
    return std::make_unique<SyntheticTasks>(o);
  }
  const auto vocab = static_cast<std::int32_t>(config.model.vocab_size);
  auto file = [&](const std::string& path, double heldout_fraction) {
    return std::make_unique<TokenFile>(path, parse_token_file_format(config.data.format, path), config.model.seq_len, seed,
                                       vocab, heldout_fraction);
  };
  if (config.data.valid_source.empty()) return file(config.data.source, config.data.valid_fraction);
  // data.source trains (a minimal tail of it is set aside and never read), data.valid_source
  // is held out whole.
  return std::make_unique<SplitData>(file(config.data.source, 0.0), file(config.data.valid_source, 1.0));
}

}  // namespace moerun
