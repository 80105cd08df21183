// Placement: which ranks of an expert-parallel group hold each expert, and how the expert's
// token-copies are shared among its replicas. An explicit object, so that nothing else does
// arithmetic on expert ids and the planner can replace it between iterations.
//
// Routing rule (deterministic, used by the dispatcher and by the planner's predictions):
// a source rank that holds a replica of expert e keeps all of its own copies for e local;
// any other source splits its copies for e over e's replicas in proportion to their integer
// shares (in rank order, largest-remainder free: cumulative integer division).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace moerun {

struct Replica {
  int rank = 0;          // ep_rank holding this copy
  std::int64_t share = 1;  // relative share of the copies from sources without a local replica
};

class Placement {
 public:
  // replicas[e]: one or more replicas of expert e, on distinct ranks.
  Placement(int ep_size, std::vector<std::vector<Replica>> replicas);
  // Expert e on ep_rank e / (experts / ep), one replica each: the static layout.
  static Placement contiguous(int experts, int ep_size);

  int ep_size() const { return ep_size_; }
  int experts() const { return static_cast<int>(replicas_.size()); }
  const std::vector<Replica>& replicas(int expert) const { return replicas_[static_cast<std::size_t>(expert)]; }
  bool holds(int rank, int expert) const;
  // Experts with a replica on an ep_rank, ascending.
  std::vector<int> local_experts(int ep_rank) const;
  int slots_used(int ep_rank) const { return static_cast<int>(local_experts(ep_rank).size()); }
  // How many experts each ep_rank holds ([ep_size]), in one pass over the replicas.
  std::vector<int> slots_used_per_rank() const;
  int max_slots_used() const;
  // How many of `rows` copies of `expert` from `source` go to each ep_rank ([ep_size]).
  std::vector<std::int64_t> split(int expert, int source, std::int64_t rows) const;
  // True when every expert has one replica and owners do not decrease with the expert id:
  // rows sorted by expert are then already sorted by destination rank.
  bool rank_contiguous() const;
  bool operator==(const Placement& other) const;
  std::string describe() const;  // e.g. "0:[0] 1:[0] 2:[1,0] 3:[1]"
  nlohmann::json to_json() const;
  // The reverse of to_json, for a group of `ep_size` ranks (a RuntimeError on a malformed one).
  static Placement from_json(int ep_size, const nlohmann::json& j);
  // Replicas here that `before` does not hold: the expert states a change from it moves.
  int replicas_added_since(const Placement& before) const;

 private:
  int ep_size_;
  std::vector<std::vector<Replica>> replicas_;
};

}  // namespace moerun
