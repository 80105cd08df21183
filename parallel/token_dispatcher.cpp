#include "parallel/token_dispatcher.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "runtime/error.h"

namespace moerun {

std::vector<std::vector<int>> TokenDispatcher::hosted_experts() const {
  const Placement& where = placement();
  std::vector<std::vector<int>> hosted(static_cast<std::size_t>(where.ep_size()));
  for (int r = 0; r < where.ep_size(); ++r) {
    hosted[static_cast<std::size_t>(r)] = where.local_experts(r);
    MOERUN_CHECK(static_cast<int>(hosted[static_cast<std::size_t>(r)].size()) <= slots_per_rank(), ConfigError,
                 "[static dispatch] the placement puts {} experts on ep rank {} but static shapes have {} expert slots "
                 "per rank; raise balance.max_experts_per_rank", hosted[static_cast<std::size_t>(r)].size(), r,
                 slots_per_rank());
  }
  return hosted;
}

std::vector<std::int32_t> TokenDispatcher::static_send_rows(std::span<const std::int64_t> kept_per_expert,
                                                           std::int64_t capacity) const {
  const Placement& where = placement();
  const int ep = where.ep_size(), slots = slots_per_rank(), me = ep_rank();
  MOERUN_CHECK(static_cast<int>(kept_per_expert.size()) == where.experts(), RuntimeError,
               "[static dispatch] {} expert counts for {} experts", kept_per_expert.size(), where.experts());
  const std::vector<std::vector<int>> hosted = hosted_experts();
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

std::int64_t TokenDispatcher::worst_case_blocks(std::int64_t copies, std::int64_t block) const {
  const std::int64_t partial = std::int64_t{placement().ep_size()} * slots_per_rank() - 1;
  if (copies <= partial) return copies;  // every copy alone in a block
  return (copies - partial + block - 1) / block + partial;
}

BlockLayout TokenDispatcher::static_send_blocks(std::span<const std::int64_t> kept_per_expert, std::int64_t block,
                                                std::int64_t blocks) const {
  const Placement& where = placement();
  const int ep = where.ep_size(), me = ep_rank();
  BlockLayout out;
  out.blocks = blocks;
  out.labels.assign(static_cast<std::size_t>(ep * blocks), -1);
  std::vector<std::int64_t> next_block(static_cast<std::size_t>(ep), 0);  // per destination
  const std::vector<std::vector<int>> hosted = hosted_experts();
  for (int e = 0; e < where.experts(); ++e) {
    const std::vector<std::int64_t> chunk = where.split(e, me, kept_per_expert[static_cast<std::size_t>(e)]);
    for (int r = 0; r < ep; ++r) {
      const std::int64_t n = chunk[static_cast<std::size_t>(r)];
      if (n == 0) continue;
      const auto& on_r = hosted[static_cast<std::size_t>(r)];
      const auto slot = static_cast<std::int32_t>(std::find(on_r.begin(), on_r.end(), e) - on_r.begin());
      std::int64_t& first = next_block[static_cast<std::size_t>(r)];
      const std::int64_t used = (n + block - 1) / block;
      MOERUN_CHECK(first + used <= blocks, RuntimeError,
                   "[blockwise dispatch] {} blocks for ep rank {} exceed the worst case {}", first + used, r, blocks);
      for (std::int64_t b = 0; b < used; ++b) out.labels[static_cast<std::size_t>(r * blocks + first + b)] = slot;
      for (std::int64_t i = 0; i < n; ++i)
        out.row_of_copy.push_back(static_cast<std::int32_t>((r * blocks + first) * block + i));
      first += used;
      out.active += used;
    }
  }
  return out;
}

BlockRoute LocalTokenDispatcher::plan_blocks(const BlockLayout& layout, std::int64_t block) {
  BlockRoute route;
  route.rows_per_local_expert.assign(experts_.size(), 0);
  for (const std::int32_t label : layout.labels) {
    if (label < 0) continue;
    route.rows_per_local_expert[static_cast<std::size_t>(label)] += block;
    ++route.active_blocks;
  }
  // The unused places (at the end) run as blocks of the last expert: zeros in, zeros out.
  route.rows_per_local_expert.back() += (static_cast<std::int64_t>(layout.labels.size()) - route.active_blocks) * block;
  return route;  // order: the identity (dispatch and combine are views)
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
