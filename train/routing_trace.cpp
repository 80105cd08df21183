#include "train/routing_trace.h"

#include <filesystem>

namespace moerun {

RoutingTraceLog::RoutingTraceLog(ProcessGroup& world, const Config& config, std::string run_dir, std::size_t moe_layers)
    : world_(world), folder_(std::move(run_dir) + "/routing") {
  shape_ = {.layers = static_cast<std::int64_t>(moe_layers), .ranks = world.size(), .experts = config.model.experts,
            .top_k = config.model.top_k, .dp = world.size() / config.parallel.ep, .ep = config.parallel.ep,
            .tokens_per_step = config.train.global_batch * config.model.seq_len, .config_json = config.to_json().dump()};
}

void RoutingTraceLog::record(std::int64_t step, const std::vector<double>& local_routed,
                             const std::vector<std::vector<std::int64_t>>& kept) {
  const std::vector<std::int64_t> mine(local_routed.begin(), local_routed.end());
  std::vector<std::int64_t> gathered(mine.size() * static_cast<std::size_t>(world_.size()));  // [rank][layer][expert]
  world_.all_gather(std::span<const std::int64_t>(mine), std::span<std::int64_t>(gathered));
  if (world_.rank() != 0) return;
  if (!writer_) {
    std::filesystem::create_directories(folder_);
    writer_ = std::make_unique<ckpt::RoutingTraceWriter>(folder_ + "/steps_" + std::to_string(step) + ".h5", shape_);
  }
  const auto layers = static_cast<std::size_t>(shape_.layers), ranks = static_cast<std::size_t>(shape_.ranks),
             experts = static_cast<std::size_t>(shape_.experts);
  std::vector<std::int64_t> routed(layers * ranks * experts), processed(layers * experts);  // [layer][rank][expert]
  for (std::size_t l = 0; l < layers; ++l) {
    for (std::size_t r = 0; r < ranks; ++r)
      for (std::size_t e = 0; e < experts; ++e)
        routed[(l * ranks + r) * experts + e] = gathered[(r * layers + l) * experts + e];
    std::copy(kept[l].begin(), kept[l].end(), processed.begin() + static_cast<std::ptrdiff_t>(l * experts));
  }
  writer_->append(step, routed, processed);
}

}  // namespace moerun
