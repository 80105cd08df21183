// GradSync: makes every copy of a parameter see the sum of the gradients of all its copies
// before the optimizer step. Dense parameters are summed over the world; an expert's
// parameters over its replicas inside the expert-parallel group, then over the
// expert-data-parallel group (every EP group has the same placement). A sum, not a mean: the
// loss is already normalized by the global target count, so each rank's gradient is its share
// of the single-process gradient.
//
// Gradients live in flat buckets (about bucket_bytes each; each parameter's grad becomes a view
// into its bucket), and a bucket's non-blocking reduction starts as soon as all of its
// parameters are marked final during the last backward of the step, overlapping the rest of
// backward. finish() waits for all of them. Collective contract: all ranks mark parameters in
// the same order and call finish() once per step.
//
// ZeRO-1 (a parameter's `shard_over` group set): its bucket is reduce-scattered over that
// group instead of all-reduced, so that each rank holds the complete sum only for its own rows
// (owned_rows); the optimizer updates those rows, and gather_parameters() all-gathers the
// updated values. An expert's parameters then form buckets of their own, so its rows do not
// depend on which other experts the rank holds (a migrated expert keeps its optimizer shard).
//
// wire_dtype bf16 (parallel.grad_reduce_dtype): a bucket travels as a bf16 copy of its fp32
// gradients, each addition of the reduction in fp32 (CommType::BF16), and the sum lands back
// in the fp32 bucket: half the bytes, one bf16 rounding of each input and partial sum.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "parallel/host_access.h"
#include "parallel/process_group.h"
#include "parallel/shard.h"
#include "runtime/parameters.h"

namespace moerun {

class GradSync {
 public:
  // At most this many buckets' first reductions in flight; launching one more waits for the
  // oldest. A reduction in flight holds a host buffer of its bucket's size in the process
  // group (MpiGroup::all_reduce_async): the bound keeps those at a few buckets, not a second
  // copy of every gradient. (On the CPU backend nothing progresses a reduction between MPI
  // calls anyway: the all-to-alls of the next layers' backward do.)
  static constexpr std::size_t kMaxInFlight = 4;
  struct Groups {
    std::vector<ProcessGroup*> sum_over;  // summed over each in turn (null and size-1 groups skipped)
    ProcessGroup* shard_over = nullptr;   // ZeRO-1: the last of sum_over, or null (every rank updates all)
  };
  using GroupsOf = std::function<Groups(const Parameter&)>;
  // params in the order their gradients become final (backward order).
  GradSync(const std::vector<Parameter*>& params_in_ready_order, const GroupsOf& groups_of, std::size_t bucket_bytes,
           DType wire_dtype = DType::F32);
  // Dense parameters over dense_group, expert parameters over expert_group, no sharding.
  GradSync(const std::vector<Parameter*>& params_in_ready_order, ProcessGroup& dense_group, ProcessGroup& expert_group,
           std::size_t bucket_bytes);
  ~GradSync();
  void mark_ready(const Parameter& param);
  // Launches every bucket not yet launched, waits for all, and returns the seconds spent
  // waiting here (the communication that backward did not hide).
  double finish();
  // The rows of `param` whose gradient sum this rank holds after finish() and whose update it
  // makes: all of them unless the parameter is sharded.
  RowRange owned_rows(const Parameter& param) const;
  bool sharded(const Parameter& param) const;
  // ZeRO-1, after the optimizer updated the owned rows: every rank gets every row's new value.
  void gather_parameters();
  std::size_t buckets() const { return buckets_.size(); }
  // Bytes each step reduces over each group (the buckets' payload; what MPI sends for it
  // depends on its algorithm, about 2 (p - 1) / p of it per rank for a ring all-reduce, and
  // (p - 1) / p each for a reduce-scatter and the all-gather that follows it).
  std::map<const ProcessGroup*, std::int64_t> payload_per_group() const;

  // The rows of an expert's parameters (shapes in name order) that rank `rank` of a group of
  // `ranks` owns when sharded: the layout its bucket will have.
  static std::vector<RowRange> expert_shard(const std::vector<Shape>& shapes_in_name_order, int ranks, int rank) {
    return shard_rows(shapes_in_name_order, ranks, rank);
  }

 private:
  struct Bucket {
    std::vector<ProcessGroup*> groups;  // summed over each in turn; the first one overlaps backward
    ProcessGroup* shard_group = nullptr;
    std::vector<std::int64_t> shard_counts;  // elements per rank of shard_group
    std::vector<Parameter*> members;
    std::vector<std::int64_t> offsets;  // of each member in `flat`
    Tensor flat;  // [elements]
    Tensor wire;  // [elements] in the wire dtype when it is not fp32; else empty
    std::size_t ready = 0;
    std::unique_ptr<HostAccess> host;
    std::unique_ptr<CommRequest> request;
  };
  void launch(Bucket& b);

  std::vector<Bucket*> in_flight_;  // launched, not yet waited, oldest first

  std::vector<Bucket> buckets_;
  std::map<const Parameter*, std::size_t> bucket_of_;
  std::map<const Parameter*, RowRange> owned_;  // sharded parameters only
};

}  // namespace moerun
