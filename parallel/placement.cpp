#include "parallel/placement.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "runtime/core/error.h"

namespace moerun {

Placement::Placement(int ep_size, std::vector<int> owner) : ep_size_(ep_size), owner_(std::move(owner)) {
  for (std::size_t e = 0; e < owner_.size(); ++e) {
    MOERUN_CHECK(owner_[e] >= 0 && owner_[e] < ep_size_, RuntimeError,
                 "[placement] expert {} placed on ep_rank {}, outside [0, {})", e, owner_[e], ep_size_);
  }
}

Placement Placement::contiguous(int experts, int ep_size) {
  std::vector<int> owner(static_cast<std::size_t>(experts));
  const int per_rank = experts / ep_size;
  for (int e = 0; e < experts; ++e) owner[static_cast<std::size_t>(e)] = e / per_rank;
  return Placement(ep_size, std::move(owner));
}

std::vector<int> Placement::local_experts(int ep_rank) const {
  std::vector<int> out;
  for (int e = 0; e < experts(); ++e)
    if (owner(e) == ep_rank) out.push_back(e);
  return out;
}

bool Placement::rank_contiguous() const {
  for (std::size_t e = 1; e < owner_.size(); ++e)
    if (owner_[e] < owner_[e - 1]) return false;
  return true;
}

std::string Placement::describe() const { return fmt::format("[{}]", fmt::join(owner_, " ")); }

}  // namespace moerun
