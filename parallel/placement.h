// Placement: which rank of an expert-parallel group holds each expert. An explicit object,
// so that nothing else does arithmetic on expert ids and the planner can replace it at run
// time. Static placement: expert e on ep_rank e / (experts / ep), contiguous blocks.
#pragma once

#include <string>
#include <vector>

namespace moerun {

class Placement {
 public:
  // owner[e] = ep_rank holding expert e.
  Placement(int ep_size, std::vector<int> owner);
  static Placement contiguous(int experts, int ep_size);

  int ep_size() const { return ep_size_; }
  int experts() const { return static_cast<int>(owner_.size()); }
  int owner(int expert) const { return owner_[static_cast<std::size_t>(expert)]; }
  // Experts held by an ep_rank, ascending.
  std::vector<int> local_experts(int ep_rank) const;
  // True when each rank's experts are a contiguous id range in rank order (rows sorted by
  // expert are then already sorted by destination rank).
  bool rank_contiguous() const;
  std::string describe() const;

 private:
  int ep_size_;
  std::vector<int> owner_;
};

}  // namespace moerun
