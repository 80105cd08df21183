#include "parallel/token_dispatcher.h"

#include <numeric>

#include "runtime/error.h"

namespace moerun {

LocalTokenDispatcher::LocalTokenDispatcher(int experts) : experts_(static_cast<std::size_t>(experts)) {
  std::iota(experts_.begin(), experts_.end(), 0);
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
