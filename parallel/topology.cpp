#include "parallel/topology.h"

#include "runtime/error.h"

namespace moerun {

Topology::Topology(ProcessGroup& world, int ep, int experts, int ranks_per_node) : world_(world), ep_(ep) {
  MOERUN_CHECK(ep >= 1 && world.size() % ep == 0, ConfigError,
               "parallel.ep = {} does not divide the world size {} (ranks = dp x ep); run with a multiple of {} ranks "
               "or choose ep among the divisors of {}",
               ep, world.size(), ep, world.size());
  MOERUN_CHECK(experts % ep == 0, ConfigError,
               "model.experts = {} is not divisible by parallel.ep = {} (each rank of an expert-parallel group holds "
               "experts / ep experts); choose ep among the divisors of {}",
               experts, ep, experts);
  const int rank = world.rank();
  ep_group_ = world.split(rank / ep, rank % ep, "ep");
  edp_group_ = world.split(rank % ep, rank / ep, "edp");
  node_group_ = ranks_per_node > 0 ? world.split(rank / ranks_per_node, rank, "node") : world.split_node_local("node");
  const std::int64_t mine = node_group_->all_reduce_value(std::int64_t{rank}, ReduceOp::Min);  // this node's id
  nodes_ = static_cast<int>(world.all_reduce_value(std::int64_t{node_group_->rank() == 0 ? 1 : 0}));
  std::vector<std::int64_t> ep_nodes(static_cast<std::size_t>(ep));
  ep_group_->all_gather(std::span<const std::int64_t>(&mine, 1), ep_nodes);
  node_of_ep_rank_.assign(ep_nodes.begin(), ep_nodes.end());
  edp_spans_nodes_ = edp_group_->all_reduce_value(mine, ReduceOp::Min) != edp_group_->all_reduce_value(mine, ReduceOp::Max);
}

bool Topology::ep_ranks_span_nodes(const std::vector<int>& ep_ranks) const {
  for (int r : ep_ranks)
    if (node_of_ep_rank_.at(static_cast<std::size_t>(r)) != node_of_ep_rank_.at(static_cast<std::size_t>(ep_ranks.front())))
      return true;
  return false;
}

}  // namespace moerun
