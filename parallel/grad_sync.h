// GradSync: makes every copy of a parameter see the sum of the gradients of all its copies
// before the optimizer step. Dense parameters are summed over the world; an expert's
// parameters over its replicas inside the expert-parallel group, then over the
// expert-data-parallel group (every EP group has the same placement). A sum, not a mean: the
// loss is already normalized by the global target count, so each rank's gradient is its share
// of the single-process gradient.
//
// Gradients live in flat buckets (about bucket_bytes each; each parameter's grad becomes a view
// into its bucket), and a bucket's non-blocking all-reduce starts as soon as all of its
// parameters are marked final during the last backward of the step, overlapping the rest of
// backward. finish() waits for all of them. Collective contract: all ranks mark parameters in
// the same order and call finish() once per step.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "parallel/host_access.h"
#include "parallel/process_group.h"
#include "runtime/core/parameters.h"

namespace moerun {

class GradSync {
 public:
  // The groups to sum a parameter over, in order (groups of size 1 are skipped).
  using GroupsOf = std::function<std::vector<ProcessGroup*>(const Parameter&)>;
  // params in the order their gradients become final (backward order).
  GradSync(const std::vector<Parameter*>& params_in_ready_order, const GroupsOf& groups_of, std::size_t bucket_bytes);
  // Dense parameters over dense_group, expert parameters over expert_group.
  GradSync(const std::vector<Parameter*>& params_in_ready_order, ProcessGroup& dense_group, ProcessGroup& expert_group,
           std::size_t bucket_bytes);
  ~GradSync();
  void mark_ready(const Parameter& param);
  // Launches every bucket not yet launched, waits for all, and returns the seconds spent
  // waiting here (the communication that backward did not hide).
  double finish();
  std::size_t buckets() const { return buckets_.size(); }
  // Bytes each step reduces over each group (the buckets' payload; what MPI sends for it
  // depends on its algorithm, about 2 (p - 1) / p of it per rank for a ring).
  std::map<const ProcessGroup*, std::int64_t> payload_per_group() const;

 private:
  struct Bucket {
    std::vector<ProcessGroup*> groups;  // summed over each in turn; the first one overlaps backward
    Tensor flat;  // [elements]
    std::size_t params = 0;
    std::size_t ready = 0;
    std::unique_ptr<HostAccess> host;
    std::unique_ptr<CommRequest> request;
  };
  void launch(Bucket& b);

  std::vector<Bucket> buckets_;
  std::map<const Parameter*, std::size_t> bucket_of_;
};

}  // namespace moerun
