#include "kernels/attention.h"

#include "kernels/check.h"
#include "runtime/error.h"

namespace moerun::kernels {

namespace {
std::int64_t check_common(std::string_view k, const AttentionArgs& p) {
  MOERUN_CHECK(p.batch >= 0 && p.seq >= 1 && p.heads >= 1, KernelError,
               "[{}] batch {}, seq {}, heads {}: seq and heads must be >= 1", k, p.batch, p.seq, p.heads);
  detail::check_present(k, "qkv", p.qkv);
  detail::check_rank(k, "qkv", *p.qkv, 2);
  const std::int64_t d3 = p.qkv->dim(1);
  MOERUN_CHECK(d3 % (3 * p.heads) == 0, KernelError, "[{}] qkv is {}: its width must be 3 * heads({}) * head_dim", k,
               shape_string(p.qkv->shape()), p.heads);
  const std::int64_t d = d3 / 3;
  detail::check_float(k, "qkv", p.qkv, {p.batch * p.seq, d3});
  detail::check_f32(k, "probs", p.probs, {p.batch, p.heads, p.seq, p.seq});
  return d;
}
}  // namespace

void attention_forward(const AttentionArgs& p) {
  const auto [table, device] = detail::table_for("attention_forward", {p.qkv, p.probs, p.out});
  const std::int64_t d = check_common("attention_forward", p);
  detail::check_float("attention_forward", "out", p.out, {p.batch * p.seq, d});
  detail::check_dtype("attention_forward", "out", *p.out, p.qkv->dtype());
  const ScopedKernelTimer timer(device, "attention_forward");
  table.attention_forward(p);
}

void attention_backward(const AttentionArgs& p) {
  const auto [table, device] = detail::table_for("attention_backward", {p.qkv, p.probs, p.dout, p.dqkv});
  const std::int64_t d = check_common("attention_backward", p);
  detail::check_float("attention_backward", "dout", p.dout, {p.batch * p.seq, d});
  detail::check_float("attention_backward", "dqkv", p.dqkv, p.qkv->shape());
  detail::check_dtype("attention_backward", "dout", *p.dout, p.qkv->dtype());
  detail::check_dtype("attention_backward", "dqkv", *p.dqkv, p.qkv->dtype());
  const ScopedKernelTimer timer(device, "attention_backward");
  table.attention_backward(p);
}

void rope(const RopeArgs& p) {
  constexpr std::string_view k = "rope";
  const auto [table, device] = detail::table_for(k, {p.qkv});
  detail::check_present(k, "qkv", p.qkv);
  detail::check_rank(k, "qkv", *p.qkv, 2);
  MOERUN_CHECK(p.seq >= 1 && p.heads >= 1 && p.qkv->dim(0) % p.seq == 0, KernelError,
               "[rope] qkv {} for seq {} and heads {}: the rows must be whole sequences", shape_string(p.qkv->shape()),
               p.seq, p.heads);
  const std::int64_t d = p.qkv->dim(1) / 3;
  MOERUN_CHECK(p.qkv->dim(1) == 3 * d && d % p.heads == 0 && (d / p.heads) % 2 == 0, KernelError,
               "[rope] qkv {} with {} heads: each head needs an even number of columns", shape_string(p.qkv->shape()),
               p.heads);
  detail::check_float(k, "qkv", p.qkv, p.qkv->shape());
  MOERUN_CHECK(p.theta > 0.0f, KernelError, "[rope] theta {} must be > 0", p.theta);
  MOERUN_CHECK(p.first_position >= 0, KernelError, "[rope] first_position {} must be >= 0", p.first_position);
  const ScopedKernelTimer timer(device, k);
  table.rope(p);
}

void attention_cached(const CachedAttentionArgs& p) {
  constexpr std::string_view k = "attention_cached";
  const auto [table, device] = detail::table_for(k, {p.qkv, p.keys, p.values, p.out});
  detail::check_present(k, "qkv", p.qkv);
  detail::check_rank(k, "qkv", *p.qkv, 2);
  detail::check_present(k, "keys", p.keys);
  detail::check_rank(k, "keys", *p.keys, 2);
  const std::int64_t t = p.qkv->dim(0), d = p.qkv->dim(1) / 3, capacity = p.keys->dim(0);
  MOERUN_CHECK(p.qkv->dim(1) == 3 * d && p.heads >= 1 && d % p.heads == 0, KernelError,
               "[{}] qkv {} with {} heads: the columns must be q, k and v of whole heads", k, shape_string(p.qkv->shape()),
               p.heads);
  MOERUN_CHECK(p.past >= 0 && p.past + t <= capacity, KernelError,
               "[{}] {} cached + {} new positions exceed the cache's {} rows", k, p.past, t, capacity);
  detail::check_float(k, "qkv", p.qkv, p.qkv->shape());
  detail::check_f32(k, "keys", p.keys, {capacity, d});
  detail::check_f32(k, "values", p.values, {capacity, d});
  detail::check_float(k, "out", p.out, {t, d});
  MOERUN_CHECK(p.out->dtype() == p.qkv->dtype(), KernelError, "[{}] out is {} but qkv is {}: they must match", k,
               dtype_name(p.out->dtype()), dtype_name(p.qkv->dtype()));
  const ScopedKernelTimer timer(device, k);
  table.attention_cached(p);
}

}  // namespace moerun::kernels
