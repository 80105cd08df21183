// Routing traces (log.routing_trace): per training step and MoE layer, the token-copies each
// source rank routed to each expert (before capacity) and the copies the experts processed,
// in an HDF5 file that h5py reads. Written by rank 0 as steps finish (flushed every step, so a
// run that dies keeps what it traced); read back by the simulator and the tests. Format in
// docs/checkpoint-format.md ("Routing traces").
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace moerun::ckpt {

struct RoutingTraceShape {
  std::int64_t layers = 0, ranks = 0, experts = 0;  // MoE layers, world ranks, experts per layer
  std::int64_t top_k = 0, dp = 0, ep = 0;
  std::int64_t tokens_per_step = 0;  // input tokens of the global batch
  std::string config_json;           // the run's config, for a reader to check what it replays
};

class RoutingTraceWriter {
 public:
  // Creates `path` (its folder must exist); an existing file is replaced.
  RoutingTraceWriter(const std::string& path, const RoutingTraceShape& shape);
  ~RoutingTraceWriter();
  RoutingTraceWriter(const RoutingTraceWriter&) = delete;
  RoutingTraceWriter& operator=(const RoutingTraceWriter&) = delete;
  // routed: [layers][ranks][experts] copies routed by each source rank; kept: [layers][experts]
  // copies processed, summed over the world.
  void append(std::int64_t step, std::span<const std::int64_t> routed, std::span<const std::int64_t> kept);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  RoutingTraceShape shape_;
  std::int64_t steps_ = 0;
};

struct RoutingTrace {
  RoutingTraceShape shape;
  std::vector<std::int64_t> step;    // [steps]
  std::vector<std::int64_t> routed;  // [steps][layers][ranks][experts]
  std::vector<std::int64_t> kept;    // [steps][layers][experts]
};

// The whole trace; a missing file or one that is not a routing trace is a CheckpointError
// naming the file.
RoutingTrace read_routing_trace(const std::string& path);

}  // namespace moerun::ckpt
