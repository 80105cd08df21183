// The MoE dispatch layout (DispatchLayoutArgs in runtime/kernel_table.h) and the balancing
// loss's expert counts: integer work over the n x k choices, sequential (a few thousand
// entries per micro-batch), so the result is the same for any thread count.
#include <algorithm>
#include <vector>

#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/onednn_util.h"
#include "runtime/error.h"

namespace moerun::cpu {

namespace {

// The first row of each (expert, rank) share and how many copies it takes: the expert's kept
// copies split over its replicas in proportion to split[e, :] (cumulative integer division).
struct Share {
  std::int64_t first_copy = 0;  // the share's first copy among the expert's kept ones
  std::int64_t copies = 0;
  std::int64_t first_row = 0;   // its first row in the send buffer
};

}  // namespace

void dispatch_layout(const DispatchLayoutArgs& p) {
  const std::int64_t n = p.index->dim(0), k = p.index->dim(1), experts = p.counts->dim(1);
  const std::int64_t rows = p.token_of_row->dim(0);
  const std::int32_t* index = i32(p.index);
  std::int32_t* token = i32(p.token_of_row);
  std::int32_t* gate = i32(p.gate_of_row);
  std::fill(token, token + rows, -1);
  std::fill(gate, gate + rows, -1);
  // The capacity cut, in priority order: each kept copy's position among its expert's.
  std::vector<std::int64_t> assigned(static_cast<std::size_t>(experts), 0), kept(static_cast<std::size_t>(experts), 0);
  std::vector<std::int64_t> position(static_cast<std::size_t>(n * k), -1);
  for (std::int64_t j = 0; j < k; ++j) {
    for (std::int64_t t = 0; t < n; ++t) {
      const std::int64_t c = t * k + j;
      const std::int32_t e = index[c];
      MOERUN_CHECK(e >= 0 && e < experts, KernelError, "[dispatch_layout] expert id {} outside [0, {})", e, experts);
      ++assigned[static_cast<std::size_t>(e)];
      if (p.capacity == 0 || kept[static_cast<std::size_t>(e)] < p.capacity)
        position[static_cast<std::size_t>(c)] = kept[static_cast<std::size_t>(e)]++;
    }
  }
  float* counts = f32(p.counts);
  for (std::int64_t e = 0; e < experts; ++e) {
    counts[e] = static_cast<float>(assigned[static_cast<std::size_t>(e)]);
    counts[experts + e] = static_cast<float>(kept[static_cast<std::size_t>(e)]);
  }
  // Each (expert, rank) share's first row.
  const std::int64_t ep = p.split != nullptr ? p.split->dim(1) : 1;
  std::vector<Share> shares(static_cast<std::size_t>(experts * ep));
  if (p.slots == 0 && p.block == 0) {  // sorted by expert
    std::int64_t row = 0;
    for (std::int64_t e = 0; e < experts; ++e) {
      shares[static_cast<std::size_t>(e * ep)] = {0, kept[static_cast<std::size_t>(e)], row};
      row += kept[static_cast<std::size_t>(e)];
    }
  } else {
    const std::int32_t* split = i32(p.split);
    const std::int32_t* slot_of = i32(p.slot_of);
    std::int32_t* labels = p.block > 0 ? i32(p.labels) : nullptr;
    if (labels != nullptr) std::fill(labels, labels + ep * p.blocks, -1);
    std::vector<std::int64_t> next_block(static_cast<std::size_t>(ep), 0);
    for (std::int64_t e = 0; e < experts; ++e) {
      const std::int64_t c = kept[static_cast<std::size_t>(e)];
      std::int64_t total = 0;
      for (std::int64_t r = 0; r < ep; ++r) total += split[e * ep + r];
      MOERUN_CHECK(total > 0 || c == 0, KernelError, "[dispatch_layout] expert {} keeps {} copies but no rank takes them", e,
                   c);
      std::int64_t cumulative = 0, given = 0;
      for (std::int64_t r = 0; r < ep; ++r) {
        cumulative += split[e * ep + r];
        const std::int64_t upto = total > 0 ? c * cumulative / total : 0;
        Share& s = shares[static_cast<std::size_t>(e * ep + r)];
        s.first_copy = given;
        s.copies = upto - given;
        given = upto;
        if (s.copies == 0) continue;
        const std::int32_t slot = slot_of[e * ep + r];
        MOERUN_CHECK(slot >= 0, KernelError, "[dispatch_layout] expert {} sends copies to rank {}, which has no slot for it",
                     e, r);
        if (p.block == 0) {
          MOERUN_CHECK(slot < p.slots && s.copies <= p.capacity, KernelError,
                       "[dispatch_layout] expert {}: {} copies for slot {} of rank {} (slots {}, capacity {})", e, s.copies,
                       slot, r, p.slots, p.capacity);
          s.first_row = (r * p.slots + slot) * p.capacity;
          continue;
        }
        std::int64_t& first = next_block[static_cast<std::size_t>(r)];
        const std::int64_t used = (s.copies + p.block - 1) / p.block;
        MOERUN_CHECK(first + used <= p.blocks, KernelError,
                     "[dispatch_layout] {} blocks for rank {} exceed its {} block places", first + used, r, p.blocks);
        std::fill(labels + r * p.blocks + first, labels + r * p.blocks + first + used, slot);
        s.first_row = (r * p.blocks + first) * p.block;
        first += used;
        if (p.blocks_used != nullptr) f32(p.blocks_used)[0] += static_cast<float>(used);
      }
    }
  }
  // Every kept copy to its row: the share that holds its position.
  for (std::int64_t c = 0; c < n * k; ++c) {
    const std::int64_t pos = position[static_cast<std::size_t>(c)];
    if (pos < 0) continue;
    const std::int64_t e = index[c];
    std::int64_t r = 0;
    while (pos >= shares[static_cast<std::size_t>(e * ep + r)].first_copy + shares[static_cast<std::size_t>(e * ep + r)].copies)
      ++r;
    const Share& s = shares[static_cast<std::size_t>(e * ep + r)];
    const std::int64_t row = s.first_row + pos - s.first_copy;
    token[row] = static_cast<std::int32_t>(c / k);
    gate[row] = static_cast<std::int32_t>(c);
  }
}

void expert_counts(const ExpertCountsArgs& p) {
  const std::int64_t n = p.index->dim(0), k = p.index->dim(1), experts = p.out->dim(1);
  const std::int64_t per_group = n / p.groups;
  const std::int32_t* index = i32(p.index);
  float* out = f32(p.out);
  std::fill(out, out + p.groups * experts, 0.0f);
  for (std::int64_t c = 0; c < n * k; ++c) {
    const std::int32_t e = index[c];
    MOERUN_CHECK(e >= 0 && e < experts, KernelError, "[expert_counts] expert id {} outside [0, {})", e, experts);
    out[(c / k / per_group) * experts + e] += 1.0f;
  }
}

}  // namespace moerun::cpu
