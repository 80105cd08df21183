// The migrator: moves expert state between the ranks of an expert-parallel group when the
// placement changes. Every new replica receives the expert's full state (weights and AdamW
// moments) from one current holder, point-to-point; replicas that the new placement drops are
// freed afterwards. The planner guarantees that nothing about the math changes: a copy is a
// copy, bit for bit.
//
// Protocol: all ranks walk the same list of transfers, ordered by (layer, expert, new rank);
// each involves one sender (the first old holder) and one receiver. A rank posts every send and
// receive it takes part in at once (non-blocking), then waits for all of them: both directions
// of a swap and all experts move concurrently, with no order that could deadlock. Messages
// match by (peer, tag) in posting order, the same on both sides. Drops happen after all
// transfers, so a rank can send an expert it is about to lose. Memory: a device that MPI cannot
// read stages every moved tensor in host memory for the whole migration.
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/placement.h"
#include "parallel/process_group.h"
#include "runtime/tensor.h"

namespace moerun {

// The owner of expert state on this rank (the trainer: parameters and optimizer moments).
class ExpertStateStore {
 public:
  virtual ~ExpertStateStore() = default;
  // Every tensor that makes up expert `expert` of MoE block `layer` here, in a fixed order.
  virtual std::vector<Tensor*> expert_tensors(int layer, int expert) = 0;
  // Allocates that state for an expert arriving here; contents are received next.
  virtual std::vector<Tensor*> create_expert(int layer, int expert) = 0;
  virtual void drop_expert(int layer, int expert) = 0;
};

struct MigrationStats {
  std::int64_t bytes_sent = 0;
  std::int64_t bytes_received = 0;
  int replicas_created = 0;  // in this EP group
  int replicas_dropped = 0;  // on this rank
  double seconds = 0.0;
};

// layers[i] is the block index of the i-th MoE layer; from[i] and to[i] its placements.
MigrationStats migrate_experts(ProcessGroup& ep_group, const std::vector<int>& layers, const std::vector<Placement>& from,
                               const std::vector<Placement>& to, ExpertStateStore& store);

}  // namespace moerun
