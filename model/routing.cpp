#include "model/routing.h"

#include "runtime/error.h"

namespace moerun {

RoutingPlan plan_routing(std::span<const std::int32_t> expert_index, std::int64_t tokens, std::int64_t top_k,
                         std::int64_t experts, std::int64_t capacity) {
  MOERUN_CHECK(static_cast<std::int64_t>(expert_index.size()) == tokens * top_k, RuntimeError,
               "[routing] {} expert choices for {} tokens x top_k {}", expert_index.size(), tokens, top_k);
  RoutingPlan plan;
  plan.tokens = tokens;
  plan.top_k = top_k;
  plan.capacity = capacity;
  plan.kept_per_expert.assign(static_cast<std::size_t>(experts), 0);
  plan.assigned_per_expert.assign(static_cast<std::size_t>(experts), 0);
  // Pass 1, in priority order: keep or drop each copy.
  std::vector<char> kept(expert_index.size(), 0);
  for (std::int64_t j = 0; j < top_k; ++j) {
    for (std::int64_t t = 0; t < tokens; ++t) {
      const std::size_t slot = static_cast<std::size_t>(t * top_k + j);
      const std::int32_t e = expert_index[slot];
      MOERUN_CHECK(e >= 0 && e < experts, RuntimeError, "[routing] expert id {} outside [0, {})", e, experts);
      ++plan.assigned_per_expert[static_cast<std::size_t>(e)];
      if (capacity == 0 || plan.kept_per_expert[static_cast<std::size_t>(e)] < capacity) {
        ++plan.kept_per_expert[static_cast<std::size_t>(e)];
        kept[slot] = 1;
      } else {
        ++plan.dropped;
      }
    }
  }
  // Pass 2: counting sort of kept copies by expert, priority order kept within an expert.
  std::vector<std::int64_t> offset(static_cast<std::size_t>(experts), 0);
  for (std::int64_t e = 1; e < experts; ++e)
    offset[static_cast<std::size_t>(e)] = offset[static_cast<std::size_t>(e - 1)] + plan.kept_per_expert[static_cast<std::size_t>(e - 1)];
  const std::int64_t total = tokens * top_k - plan.dropped;
  plan.token_of_copy.resize(static_cast<std::size_t>(total));
  plan.slot_of_copy.resize(static_cast<std::size_t>(total));
  for (std::int64_t j = 0; j < top_k; ++j) {
    for (std::int64_t t = 0; t < tokens; ++t) {
      const std::size_t slot = static_cast<std::size_t>(t * top_k + j);
      if (!kept[slot]) continue;
      const auto pos = static_cast<std::size_t>(offset[static_cast<std::size_t>(expert_index[slot])]++);
      plan.token_of_copy[pos] = static_cast<std::int32_t>(t);
      plan.slot_of_copy[pos] = static_cast<std::int32_t>(slot);
    }
  }
  return plan;
}

}  // namespace moerun
