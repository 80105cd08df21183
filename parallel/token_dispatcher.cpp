#include "parallel/token_dispatcher.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "runtime/error.h"

namespace moerun {

template <class Fn>
void TokenDispatcher::for_each_share(std::span<const std::int64_t> kept_per_expert, Fn&& fn) const {
  const Placement& where = placement();
  const int ep = where.ep_size(), me = ep_rank();
  MOERUN_CHECK(static_cast<int>(kept_per_expert.size()) == where.experts(), RuntimeError,
               "[static dispatch] {} expert counts for {} experts", kept_per_expert.size(), where.experts());
  std::vector<std::vector<int>> hosted(static_cast<std::size_t>(ep));
  for (int r = 0; r < ep; ++r) {
    hosted[static_cast<std::size_t>(r)] = where.local_experts(r);
    MOERUN_CHECK(static_cast<int>(hosted[static_cast<std::size_t>(r)].size()) <= slots_per_rank(), ConfigError,
                 "[static dispatch] the placement puts {} experts on ep rank {} but static shapes have {} expert slots "
                 "per rank; raise balance.max_experts_per_rank", hosted[static_cast<std::size_t>(r)].size(), r,
                 slots_per_rank());
  }
  for (int e = 0; e < where.experts(); ++e) {
    const std::int64_t kept = kept_per_expert[static_cast<std::size_t>(e)];
    const std::vector<std::int64_t> chunk = where.split(e, me, kept);  // rows per rank, in rank order
    for (int r = 0; r < ep; ++r) {
      const std::int64_t n = chunk[static_cast<std::size_t>(r)];
      if (n == 0) continue;
      const auto& on_r = hosted[static_cast<std::size_t>(r)];
      fn(e, kept, r, static_cast<std::int32_t>(std::find(on_r.begin(), on_r.end(), e) - on_r.begin()), n);
    }
  }
}

std::vector<std::int32_t> TokenDispatcher::static_send_rows(std::span<const std::int64_t> kept_per_expert,
                                                           std::int64_t capacity) const {
  const std::int64_t slots = slots_per_rank();
  std::vector<std::int32_t> rows;
  for_each_share(kept_per_expert, [&](int e, std::int64_t kept, int r, std::int32_t slot, std::int64_t n) {
    MOERUN_CHECK(kept <= capacity, RuntimeError, "[static dispatch] expert {} keeps {} copies, over its capacity {}", e,
                 kept, capacity);
    const std::int64_t first = (std::int64_t{r} * slots + slot) * capacity;
    for (std::int64_t i = 0; i < n; ++i) rows.push_back(static_cast<std::int32_t>(first + i));
  });
  return rows;
}

std::int64_t TokenDispatcher::worst_case_blocks(std::int64_t copies, std::int64_t block) const {
  const std::int64_t partial = std::int64_t{placement().ep_size()} * slots_per_rank() - 1;
  if (copies <= partial) return copies;  // every copy alone in a block
  return (copies - partial + block - 1) / block + partial;
}

BlockLayout TokenDispatcher::static_send_blocks(std::span<const std::int64_t> kept_per_expert, std::int64_t block,
                                                std::int64_t blocks) const {
  const int ep = placement().ep_size();
  BlockLayout out;
  out.blocks = blocks;
  out.labels.assign(static_cast<std::size_t>(ep * blocks), -1);
  std::vector<std::int64_t> next_block(static_cast<std::size_t>(ep), 0);  // per destination
  for_each_share(kept_per_expert, [&](int, std::int64_t, int r, std::int32_t slot, std::int64_t n) {
    std::int64_t& first = next_block[static_cast<std::size_t>(r)];
    const std::int64_t used = (n + block - 1) / block;
    MOERUN_CHECK(first + used <= blocks, RuntimeError,
                 "[blockwise dispatch] {} blocks for ep rank {} exceed the worst case {}", first + used, r, blocks);
    for (std::int64_t b = 0; b < used; ++b) out.labels[static_cast<std::size_t>(r * blocks + first + b)] = slot;
    for (std::int64_t i = 0; i < n; ++i) out.row_of_copy.push_back(static_cast<std::int32_t>((r * blocks + first) * block + i));
    first += used;
    out.active += used;
  });
  return out;
}

BlockRoute group_blocks(std::span<const std::int64_t> labels, std::int64_t local_experts, std::int64_t block) {
  BlockRoute route;
  route.rows_per_local_expert.assign(static_cast<std::size_t>(local_experts), 0);
  route.order.reserve(labels.size() * static_cast<std::size_t>(block));
  auto take = [&](std::size_t place) {
    for (std::int64_t c = 0; c < block; ++c) route.order.push_back(static_cast<std::int32_t>(std::int64_t(place) * block + c));
  };
  for (std::int64_t j = 0; j < local_experts; ++j)
    for (std::size_t place = 0; place < labels.size(); ++place)
      if (labels[place] == j) {
        take(place);
        route.rows_per_local_expert[static_cast<std::size_t>(j)] += block;
        ++route.active_blocks;
      }
  // The unused places run as blocks of the last local expert (zeros in, zeros out), so that
  // every step runs the same number of block matmuls.
  for (std::size_t place = 0; place < labels.size(); ++place)
    if (labels[place] < 0) {
      take(place);
      if (local_experts > 0) route.rows_per_local_expert.back() += block;
    }
  return route;
}

BlockRoute LocalTokenDispatcher::plan_blocks(const BlockLayout& layout, std::int64_t block) {
  // One rank: the blocks are already grouped by expert, unused ones last, so the order is the
  // identity (dispatch and combine are views).
  const std::vector<std::int64_t> labels(layout.labels.begin(), layout.labels.end());
  return group_blocks(labels, static_cast<std::int64_t>(experts_.size()), block);
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
