#include "parallel/token_dispatcher.h"

#include <numeric>
#include <utility>

#include "runtime/error.h"

namespace moerun {

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
