#include "parallel/token_dispatcher.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "runtime/error.h"

namespace moerun {

const SlotTable& TokenDispatcher::slot_table(Device& device) {
  const Placement& where = placement();
  // Called by every MoE forward: rebuilt only when the placement (or the device) changed.
  if (slot_table_.split.defined() && &slot_table_.split.device() == &device && table_placement_ == where)
    return slot_table_;
  const int ep = where.ep_size(), me = ep_rank(), experts = where.experts(), slots = slots_per_rank();
  const std::size_t cells = static_cast<std::size_t>(experts * ep);
  std::vector<std::int32_t> table(2 * cells + static_cast<std::size_t>(slots), -1);  // split, slot_of, local_slots
  std::int32_t* split = table.data();
  std::int32_t* slot_of = split + cells;
  std::int32_t* local_slots = slot_of + cells;
  std::fill(split, split + cells, 0);
  for (int r = 0; r < ep; ++r) {
    const std::vector<int> hosted = where.local_experts(r);
    MOERUN_CHECK(static_cast<int>(hosted.size()) <= slots, ConfigError,
                 "[static dispatch] the placement puts {} experts on ep rank {} but static shapes have {} expert slots "
                 "per rank; raise balance.max_experts_per_rank", hosted.size(), r, slots);
    for (std::size_t slot = 0; slot < hosted.size(); ++slot) {
      slot_of[hosted[slot] * ep + r] = static_cast<std::int32_t>(slot);
      if (r == me) local_slots[slot] = static_cast<std::int32_t>(slot);  // slot j holds local expert j
    }
  }
  for (int e = 0; e < experts; ++e) {
    if (where.holds(me, e)) {
      split[e * ep + me] = 1;
      continue;
    }
    for (const Replica& replica : where.replicas(e)) split[e * ep + replica.rank] = static_cast<std::int32_t>(replica.share);
  }
  const std::span<const std::int32_t> all(table);
  slot_table_.split = Tensor::from_host(device, {experts, ep}, all.subspan(0, cells));
  slot_table_.slot_of = Tensor::from_host(device, {experts, ep}, all.subspan(cells, cells));
  slot_table_.local_slots = Tensor::from_host(device, {slots, 1}, all.subspan(2 * cells));
  table_placement_ = where;
  return slot_table_;
}

std::int64_t TokenDispatcher::worst_case_blocks(std::int64_t copies, std::int64_t block) const {
  const std::int64_t partial = std::int64_t{placement().ep_size()} * slots_per_rank() - 1;
  if (copies <= partial) return copies;  // every copy alone in a block
  return (copies - partial + block - 1) / block + partial;
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
