// The MoE router on the CPU: one pass per token row over [experts] (small: experts <= 256),
// no oneDNN primitive fits a fused softmax + top-k + renormalization.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/onednn_util.h"

namespace moerun::cpu {

void router_forward(const RouterArgs& p) {
  const std::int64_t n = p.probs->dim(0), e = p.probs->dim(1), k = p.index->dim(1);
  const float* logits = f32(p.logits);
  float* probs = f32(p.probs);
  float* lse = f32(p.lse);
  std::int32_t* index = i32(p.index);
  float* gates = f32(p.gates);
#pragma omp parallel for if (n * e > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) {
    float* pi = probs + i * e;
    lse[i] = softmax_row(logits + i * e, pi, e);
    std::vector<std::int32_t> order(static_cast<std::size_t>(e));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [pi](std::int32_t a, std::int32_t b) { return pi[a] > pi[b] || (pi[a] == pi[b] && a < b); });
    float total = 0.0f;
    for (std::int64_t j = 0; j < k; ++j) total += pi[order[static_cast<std::size_t>(j)]];
    const float norm = p.renormalize ? 1.0f / total : 1.0f;
    for (std::int64_t j = 0; j < k; ++j) {
      index[i * k + j] = order[static_cast<std::size_t>(j)];
      gates[i * k + j] = pi[order[static_cast<std::size_t>(j)]] * norm;
    }
  }
}

void router_backward(const RouterArgs& p) {
  const std::int64_t n = p.probs->dim(0), e = p.probs->dim(1), k = p.index->dim(1);
  const float* probs = f32(p.probs);
  const float* lse = f32(p.lse);
  const std::int32_t* index = i32(p.index);
  const float* gates = f32(p.gates);
  const float* dgates = f32(p.dgates);
  const float* aux = f32(p.aux_weight);
  float* dlogits = f32(p.dlogits);
#pragma omp parallel for if (n * e > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) {
    const float* pi = probs + i * e;
    float* di = dlogits + i * e;
    // dvals through g_j = v_j / S: dv_j = (dg_j - sum_m dg_m g_m) / S, S = v_j / g_j.
    float dot = 0.0f, vsum = 0.0f;
    for (std::int64_t j = 0; j < k; ++j) {
      dot += dgates[i * k + j] * gates[i * k + j];
      vsum += pi[index[i * k + j]];
    }
    for (std::int64_t j = 0; j < e; ++j) di[j] = aux[j];  // di holds dprobs first
    for (std::int64_t j = 0; j < k; ++j) {
      const float dv = p.renormalize ? (dgates[i * k + j] - dot) / vsum : dgates[i * k + j];
      di[index[i * k + j]] += dv;
    }
    float inner = 0.0f;
    for (std::int64_t j = 0; j < e; ++j) inner += di[j] * pi[j];
    for (std::int64_t j = 0; j < e; ++j) di[j] = pi[j] * (di[j] - inner) + p.z_scale * lse[i] * pi[j];
  }
}

}  // namespace moerun::cpu
