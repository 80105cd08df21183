#include "parallel/topology.h"

#include "runtime/core/error.h"

namespace moerun {

Topology::Topology(ProcessGroup& world, int ep, int experts) : world_(world), ep_(ep) {
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
  node_group_ = world.split_node_local("node");
}

}  // namespace moerun
