#include "parallel/token_dispatcher.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "runtime/error.h"

namespace moerun {

std::vector<std::int32_t> TokenDispatcher::static_send_rows(std::span<const std::int64_t> kept_per_expert,
                                                           std::int64_t capacity) const {
  const Placement& where = placement();
  const int ep = where.ep_size(), slots = slots_per_rank(), me = ep_rank();
  MOERUN_CHECK(static_cast<int>(kept_per_expert.size()) == where.experts(), RuntimeError,
               "[static dispatch] {} expert counts for {} experts", kept_per_expert.size(), where.experts());
  std::vector<std::vector<int>> hosted(static_cast<std::size_t>(ep));
  for (int r = 0; r < ep; ++r) {
    hosted[static_cast<std::size_t>(r)] = where.local_experts(r);
    MOERUN_CHECK(static_cast<int>(hosted[static_cast<std::size_t>(r)].size()) <= slots, ConfigError,
                 "[static dispatch] the placement puts {} experts on ep rank {} but static shapes have {} expert slots "
                 "per rank; raise balance.max_experts_per_rank", hosted[static_cast<std::size_t>(r)].size(), r, slots);
  }
  std::vector<std::int32_t> rows;
  for (int e = 0; e < where.experts(); ++e) {
    const std::int64_t kept = kept_per_expert[static_cast<std::size_t>(e)];
    MOERUN_CHECK(kept <= capacity, RuntimeError, "[static dispatch] expert {} keeps {} copies, over its capacity {}", e,
                 kept, capacity);
    const std::vector<std::int64_t> chunk = where.split(e, me, kept);  // rows per rank, in rank order
    for (int r = 0; r < ep; ++r) {
      const std::int64_t n = chunk[static_cast<std::size_t>(r)];
      if (n == 0) continue;
      const auto& on_r = hosted[static_cast<std::size_t>(r)];
      const auto slot = std::find(on_r.begin(), on_r.end(), e) - on_r.begin();
      const std::int64_t first = (std::int64_t{r} * slots + slot) * capacity;
      for (std::int64_t i = 0; i < n; ++i) rows.push_back(static_cast<std::int32_t>(first + i));
    }
  }
  return rows;
}

LocalTokenDispatcher::LocalTokenDispatcher(int experts)
    : placement_(Placement::contiguous(experts, 1)), experts_(placement_.local_experts(0)) {}

void LocalTokenDispatcher::set_placement(Placement placement) {
  MOERUN_CHECK(placement.ep_size() == 1 && placement.experts() == placement_.experts(), RuntimeError,
               "[dispatcher] a one-process dispatcher takes only a placement of its {} experts on one rank, not {} "
               "experts on {} ranks", placement_.experts(), placement.experts(), placement.ep_size());
  placement_ = std::move(placement);
}

DispatchPlan LocalTokenDispatcher::plan(std::span<const std::int64_t> rows_per_expert) {
  MOERUN_CHECK(rows_per_expert.size() == experts_.size(), RuntimeError,
               "[dispatch plan] {} expert counts for {} experts", rows_per_expert.size(), experts_.size());
  DispatchPlan p;
  p.send_per_expert.assign(rows_per_expert.begin(), rows_per_expert.end());
  p.recv_per_local_expert = p.send_per_expert;
  p.rows_received = std::accumulate(p.send_per_expert.begin(), p.send_per_expert.end(), std::int64_t{0});
  return p;
}

}  // namespace moerun
