// The bookkeeping half of MoE routing, on the host: from each token's top-k expert choice,
// apply the expert capacity and sort the kept token-copies by expert. Integer work over
// tokens x top_k entries; the dispatcher needs these counts on the host to size its messages.
//
// Priority when an expert is over capacity (GShard/Switch): every token's first choice
// before any second choice, and within a choice rank, earlier tokens first. Capacity is per
// source micro-batch, so the same micro-batch drops the same copies on any parallel layout.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace moerun {

struct RoutingPlan {
  std::int64_t tokens = 0;
  std::int64_t top_k = 0;
  std::int64_t capacity = 0;                      // 0 = dropless
  std::vector<std::int32_t> token_of_copy;        // [kept] source token row, sorted by expert
  std::vector<std::int32_t> slot_of_copy;         // [kept] index into the [tokens * top_k] gates
  std::vector<std::int64_t> kept_per_expert;      // [experts]
  std::vector<std::int64_t> assigned_per_expert;  // [experts] before the capacity cut
  std::int64_t dropped = 0;
  std::int64_t kept() const { return static_cast<std::int64_t>(token_of_copy.size()); }
};

// expert_index: row-major [tokens, top_k] global expert ids.
RoutingPlan plan_routing(std::span<const std::int32_t> expert_index, std::int64_t tokens, std::int64_t top_k,
                         std::int64_t experts, std::int64_t capacity);

}  // namespace moerun
