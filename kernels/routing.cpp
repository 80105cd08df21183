#include "kernels/routing.h"

#include "kernels/check.h"
#include "runtime/error.h"

namespace moerun::kernels {

namespace {
void check_index(std::string_view k, const Tensor* index) {
  detail::check_present(k, "index", index);
  detail::check_rank(k, "index", *index, 2);
  detail::check_dtype(k, "index", *index, DType::I32);
}

void check_i32(std::string_view k, std::string_view name, const Tensor* t, const Shape& shape) {
  detail::check_present(k, name, t);
  detail::check_dtype(k, name, *t, DType::I32);
  detail::check_shape(k, name, *t, shape);
}
}  // namespace

void dispatch_layout(const DispatchLayoutArgs& p) {
  constexpr std::string_view k = "dispatch_layout";
  const auto [table, device] =
      detail::table_for(k, {p.index, p.split, p.slot_of, p.token_of_row, p.gate_of_row, p.labels, p.counts, p.blocks_used});
  check_index(k, p.index);
  detail::check_present(k, "counts", p.counts);
  detail::check_rank(k, "counts", *p.counts, 2);
  const std::int64_t copies = p.index->numel(), experts = p.counts->dim(1);
  detail::check_f32(k, "counts", p.counts, {2, experts});
  MOERUN_CHECK(p.capacity >= 0 && p.slots >= 0 && p.block >= 0 && p.blocks >= 0 && !(p.slots > 0 && p.block > 0),
               KernelError, "[dispatch_layout] capacity {}, slots {}, block {}, blocks {}: at most one of slots and block, "
               "none negative", p.capacity, p.slots, p.block, p.blocks);
  std::int64_t rows = copies;
  if (p.slots > 0 || p.block > 0) {
    detail::check_present(k, "split", p.split);
    detail::check_rank(k, "split", *p.split, 2);
    const std::int64_t ep = p.split->dim(1);
    check_i32(k, "split", p.split, {experts, ep});
    check_i32(k, "slot_of", p.slot_of, {experts, ep});
    if (p.slots > 0) {
      MOERUN_CHECK(p.capacity > 0, KernelError, "[dispatch_layout] the slots layout needs a capacity > 0");
      rows = ep * p.slots * p.capacity;
    } else {
      rows = ep * p.blocks * p.block;
      check_i32(k, "labels", p.labels, {ep * p.blocks, 1});
      if (p.blocks_used != nullptr) detail::check_f32(k, "blocks_used", p.blocks_used, {1});
    }
  }
  check_i32(k, "token_of_row", p.token_of_row, {rows});
  check_i32(k, "gate_of_row", p.gate_of_row, {rows});
  const ScopedKernelTimer timer(device, "dispatch_layout");
  table.dispatch_layout(p);
}

void expert_counts(const ExpertCountsArgs& p) {
  constexpr std::string_view k = "expert_counts";
  const auto [table, device] = detail::table_for(k, {p.index, p.out});
  check_index(k, p.index);
  detail::check_present(k, "out", p.out);
  detail::check_rank(k, "out", *p.out, 2);
  const std::int64_t n = p.index->dim(0);
  MOERUN_CHECK(p.groups >= 1 && n % p.groups == 0, KernelError, "[expert_counts] {} tokens do not split into {} groups", n,
               p.groups);
  detail::check_f32(k, "out", p.out, {p.groups, p.out->dim(1)});
  const ScopedKernelTimer timer(device, "expert_counts");
  table.expert_counts(p);
}

}  // namespace moerun::kernels
