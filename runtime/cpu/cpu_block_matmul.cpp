// Blockwise expert matmuls (BlockMatmulArgs): the labels are read here, in the backend, and
// the used blocks run as one grouped matmul (one primitive for every block: they share a
// shape); unused places are skipped, as an accelerator's blockwise kernel would.
#include <cstring>
#include <deque>
#include <string_view>

#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/onednn_util.h"
#include "runtime/error.h"

namespace moerun::cpu {

namespace {
// fn(block index, its label) for every used block; a KernelError for a label past `count`.
template <class Fn>
void for_each_used_block(std::string_view kernel, const BlockMatmulArgs& p, std::size_t count, Fn&& fn) {
  const std::int32_t* labels = i32(p.labels);
  for (std::int64_t i = 0; i < p.labels->dim(0); ++i) {
    if (labels[i] < 0) continue;
    MOERUN_CHECK(static_cast<std::size_t>(labels[i]) < count, KernelError, "[{}] block {} has label {} but there are {} "
                 "FFNs", kernel, i, labels[i], count);
    fn(i, static_cast<std::size_t>(labels[i]));
  }
}
}  // namespace

void block_matmul(const BlockMatmulArgs& p) {
  GroupedMatmulArgs args;
  std::deque<Tensor> views;  // alive until the call
  const std::int64_t b = p.block;
  const std::size_t row_bytes = static_cast<std::size_t>(p.out->dim(1)) * dtype_size(p.out->dtype());
  std::vector<bool> used(static_cast<std::size_t>(p.labels->dim(0)), false);
  for_each_used_block("block_matmul", p, p.weights.size(), [&](std::int64_t i, std::size_t label) {
    used[static_cast<std::size_t>(i)] = true;
    const Tensor& xi = views.emplace_back(p.x->rows(i * b, (i + 1) * b));
    Tensor& oi = views.emplace_back(p.out->rows(i * b, (i + 1) * b));
    args.groups.push_back({.a = &xi, .b = p.weights[label], .c = &oi, .transpose_b = p.transpose_weights,
                           .accumulate = p.accumulate});
  });
  if (!p.accumulate) {
    auto* out = static_cast<std::byte*>(p.out->data());
    for (std::size_t i = 0; i < used.size(); ++i)
      if (!used[i]) std::memset(out + i * static_cast<std::size_t>(b) * row_bytes, 0, static_cast<std::size_t>(b) * row_bytes);
  }
  if (!args.groups.empty()) grouped_matmul(args);
}

void block_weight_grad(const BlockMatmulArgs& p) {
  GroupedMatmulArgs args;
  std::deque<Tensor> views;
  const std::int64_t b = p.block;
  for_each_used_block("block_weight_grad", p, p.grads.size(), [&](std::int64_t i, std::size_t label) {
    const Tensor& xi = views.emplace_back(p.x->rows(i * b, (i + 1) * b));
    const Tensor& dyi = views.emplace_back(p.dy->rows(i * b, (i + 1) * b));
    args.groups.push_back({.a = &xi, .b = &dyi, .c = p.grads[label], .transpose_a = true, .accumulate = true});
  });
  if (!args.groups.empty()) grouped_matmul(args);
}

}  // namespace moerun::cpu
