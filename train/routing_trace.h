// log.routing_trace: every step, the token-copies each rank routed to each expert (before
// capacity) are gathered to rank 0 and appended, with the world's processed copies, to
// <run-dir>/routing/steps_<first step>.h5 (checkpoint/routing_trace_file.h). A resumed run
// starts a new file at its first step; where files overlap (steps after the checkpoint that a
// crashed run had traced), the later file is the one the run continued from.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/routing_trace_file.h"
#include "parallel/process_group.h"
#include "train/config.h"

namespace moerun {

class RoutingTraceLog {
 public:
  RoutingTraceLog(ProcessGroup& world, const Config& config, std::string run_dir, std::size_t moe_layers);
  // Collective: every rank passes its own routed counts ([moe layer * expert]); `kept` is the
  // world's processed copies per [moe layer][expert].
  void record(std::int64_t step, const std::vector<double>& local_routed,
              const std::vector<std::vector<std::int64_t>>& kept);

 private:
  ProcessGroup& world_;
  std::string folder_;
  ckpt::RoutingTraceShape shape_;
  std::unique_ptr<ckpt::RoutingTraceWriter> writer_;  // rank 0, from the first recorded step
};

}  // namespace moerun
