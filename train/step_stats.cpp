#include "train/step_stats.h"

#include <algorithm>

#include "runtime/error.h"

namespace moerun {

GlobalStepNumbers reduce_step_numbers(ProcessGroup& world, const LocalStepNumbers& local) {
  MOERUN_CHECK(local.routed.size() == local.kept.size(), RuntimeError, "[step numbers] {} routed but {} kept counts",
               local.routed.size(), local.kept.size());
  const std::size_t cells = local.routed.size(), ranks = static_cast<std::size_t>(world.size());
  // [0, 11) scalars | routed | kept | expert seconds per world rank
  constexpr std::size_t kScalars = 11;
  std::vector<double> wire(kScalars + 2 * cells + ranks, 0.0);
  wire[0] = local.ce_sum;
  wire[1] = local.aux;
  wire[2] = local.z;
  wire[3] = local.dropped;
  wire[4] = local.copies;
  wire[5] = local.grad_squares;
  wire[6] = local.nonfinite_grads > 0 ? 1.0 : 0.0;
  wire[7] = local.signal ? 1.0 : 0.0;
  wire[8] = double(local.a2a.bytes_inter_node);
  wire[9] = double(local.a2a.messages_intra_node);
  wire[10] = double(local.a2a.messages_inter_node);
  std::copy(local.routed.begin(), local.routed.end(), wire.begin() + kScalars);
  std::copy(local.kept.begin(), local.kept.end(), wire.begin() + static_cast<std::ptrdiff_t>(kScalars + cells));
  wire[kScalars + 2 * cells + static_cast<std::size_t>(world.rank())] = local.expert_seconds;
  world.all_reduce(std::span<double>(wire));
  GlobalStepNumbers g;
  g.ce_sum = wire[0];
  g.aux = wire[1];
  g.z = wire[2];
  g.dropped = wire[3];
  g.copies = wire[4];
  g.grad_squares = wire[5];
  g.ranks_with_nonfinite_grads = static_cast<std::int64_t>(wire[6]);
  g.signal = wire[7] > 0.0;
  g.a2a_bytes_inter_node = static_cast<std::int64_t>(wire[8]);
  g.a2a_messages_intra_node = static_cast<std::int64_t>(wire[9]);
  g.a2a_messages_inter_node = static_cast<std::int64_t>(wire[10]);
  const auto at = [&](std::size_t i) { return wire.begin() + static_cast<std::ptrdiff_t>(i); };
  g.routed.assign(at(kScalars), at(kScalars + cells));
  g.kept.assign(at(kScalars + cells), at(kScalars + 2 * cells));
  g.expert_seconds.assign(at(kScalars + 2 * cells), at(kScalars + 2 * cells + ranks));
  return g;
}

void fill_global_numbers(const GlobalStepNumbers& g, const StepShape& shape, bool per_rank, StepResult& r) {
  r.loss = g.ce_sum / shape.targets;
  r.aux_loss = g.aux / shape.micro_batches;
  r.z_loss = g.z / shape.micro_batches;
  r.dropped_frac = g.copies > 0 ? g.dropped / g.copies : 0.0;
  r.expert_counts.assign(shape.moe_layers, std::vector<std::int64_t>(shape.experts));
  r.expert_kept.assign(shape.moe_layers, std::vector<std::int64_t>(shape.experts));
  for (std::size_t layer = 0; layer < shape.moe_layers; ++layer)
    for (std::size_t e = 0; e < shape.experts; ++e) {
      r.expert_counts[layer][e] = static_cast<std::int64_t>(g.routed[layer * shape.experts + e]);
      r.expert_kept[layer][e] = static_cast<std::int64_t>(g.kept[layer * shape.experts + e]);
    }
  // Per expert-parallel group: every group sees 1 / dp of the global copies.
  const double dp = double(shape.dp);
  double world_seconds = 0.0;
  for (double s : g.expert_seconds) world_seconds += s;
  r.expert_seconds_total = world_seconds / dp;
  r.kept_copies = (g.copies - g.dropped) / dp;
  const auto first = g.expert_seconds.begin() + shape.ep_group_first_rank;
  const std::vector<double> group(first, first + shape.ep);
  const double max_seconds = *std::max_element(group.begin(), group.end());
  const double mean_seconds = r.expert_seconds_total / double(shape.ep);
  r.expert_time_imbalance = mean_seconds > 0 ? max_seconds / mean_seconds : 1.0;
  if (per_rank) r.rank_expert_seconds = group;
  r.world_a2a_bytes_inter_node = g.a2a_bytes_inter_node;
  r.world_a2a_messages_intra_node = g.a2a_messages_intra_node;
  r.world_a2a_messages_inter_node = g.a2a_messages_inter_node;
  r.stop_requested = g.signal;
}

LocalStepNumbers local_step_numbers(const LossSums& losses, const std::vector<MoeStats>& layers, StepResult& r) {
  LocalStepNumbers local{.ce_sum = losses.ce_sum, .aux = losses.aux, .z = losses.z};
  for (const MoeStats& layer : layers) {
    local.dropped += double(layer.dropped);
    local.copies += double(layer.copies);
    local.routed.insert(local.routed.end(), layer.assigned_per_expert.begin(), layer.assigned_per_expert.end());
    local.kept.insert(local.kept.end(), layer.kept_per_expert.begin(), layer.kept_per_expert.end());
    local.expert_seconds += layer.expert_seconds;
    r.blocks_active += layer.blocks_active;
    r.blocks_worst_case += layer.blocks_worst_case;
  }
  return local;
}

}  // namespace moerun
