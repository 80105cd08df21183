// The MoE router on the CPU: one pass per token row over [experts] (small: experts <= 256),
// no oneDNN primitive fits a fused score + top-k + renormalization.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/onednn_util.h"

namespace moerun::cpu {

namespace {
// Sigmoid scores of one row: probs = s / sum(s), returns log(sum(s)); s itself goes to `scores`.
float sigmoid_row(const float* x, float* scores, float* probs, std::int64_t n) {
  double sum = 0.0;
  for (std::int64_t j = 0; j < n; ++j) {
    scores[j] = 1.0f / (1.0f + std::exp(-x[j]));
    sum += scores[j];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (std::int64_t j = 0; j < n; ++j) probs[j] = scores[j] * inv;
  return static_cast<float>(std::log(sum));
}
}  // namespace

void router_forward(const RouterArgs& p) {
  const std::int64_t n = p.probs->dim(0), e = p.probs->dim(1), k = p.index->dim(1);
  const bool sigmoid = p.score == RouterScore::Sigmoid;
  const float* logits = f32(p.logits);
  const float* bias = p.select_bias != nullptr ? f32(p.select_bias) : nullptr;
  const std::int32_t* forced = p.forced_index != nullptr ? i32(p.forced_index) : nullptr;
  float* probs = f32(p.probs);
  float* lse = f32(p.lse);
  std::int32_t* index = i32(p.index);
  float* gates = f32(p.gates);
#pragma omp parallel for if (n * e > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) {
    float* pi = probs + i * e;
    std::vector<float> scores(static_cast<std::size_t>(e)), choice(static_cast<std::size_t>(e));
    if (sigmoid) {
      lse[i] = sigmoid_row(logits + i * e, scores.data(), pi, e);
    } else {
      lse[i] = softmax_row(logits + i * e, pi, e);
      std::copy(pi, pi + e, scores.begin());
    }
    for (std::int64_t j = 0; j < e; ++j)
      choice[static_cast<std::size_t>(j)] = scores[static_cast<std::size_t>(j)] + (bias != nullptr ? bias[j] : 0.0f);
    std::vector<std::int32_t> order(static_cast<std::size_t>(e));
    std::iota(order.begin(), order.end(), 0);
    const float* c = choice.data();
    if (forced != nullptr) {
      std::copy(forced + i * k, forced + (i + 1) * k, order.begin());
    } else {
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [c](std::int32_t a, std::int32_t b) { return c[a] > c[b] || (c[a] == c[b] && a < b); });
    }
    float total = 0.0f;
    for (std::int64_t j = 0; j < k; ++j) total += scores[static_cast<std::size_t>(order[static_cast<std::size_t>(j)])];
    const float norm = p.renormalize ? 1.0f / total : 1.0f;
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int32_t expert = order[static_cast<std::size_t>(j)];
      index[i * k + j] = expert;
      gates[i * k + j] = scores[static_cast<std::size_t>(expert)] * norm;
    }
  }
}

void router_backward(const RouterArgs& p) {
  const std::int64_t n = p.probs->dim(0), e = p.probs->dim(1), k = p.index->dim(1);
  const std::int64_t groups = p.aux_weight->dim(0), per_group = groups > 0 && n > 0 ? n / groups : 1;
  const bool sigmoid = p.score == RouterScore::Sigmoid;
  const float* probs = f32(p.probs);
  const float* lse = f32(p.lse);
  const std::int32_t* index = i32(p.index);
  const float* gates = f32(p.gates);
  const float* dgates = f32(p.dgates);
  const float* aux_rows = f32(p.aux_weight);
  float* dlogits = f32(p.dlogits);
#pragma omp parallel for if (n * e > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) {
    const float* pi = probs + i * e;
    const float* aux = aux_rows + (i / per_group) * e;
    float* di = dlogits + i * e;
    // The scores the gates were taken from: the softmax itself, or s = probs * sum(s).
    const float scale = sigmoid ? std::exp(lse[i]) : 1.0f;
    // dscores through g_j = s_j / S_k: ds_j = (dg_j - sum_m dg_m g_m) / S_k, S_k = sum of the chosen s.
    float dot = 0.0f, vsum = 0.0f;
    for (std::int64_t j = 0; j < k; ++j) {
      dot += dgates[i * k + j] * gates[i * k + j];
      vsum += pi[index[i * k + j]] * scale;
    }
    if (!sigmoid) {
      for (std::int64_t j = 0; j < e; ++j) di[j] = aux[j];  // di holds dprobs first
      for (std::int64_t j = 0; j < k; ++j)
        di[index[i * k + j]] += p.renormalize ? (dgates[i * k + j] - dot) / vsum : dgates[i * k + j];
      float inner = 0.0f;
      for (std::int64_t j = 0; j < e; ++j) inner += di[j] * pi[j];
      for (std::int64_t j = 0; j < e; ++j) di[j] = pi[j] * (di[j] - inner) + p.z_scale * lse[i] * pi[j];
      continue;
    }
    // Sigmoid: probs = s / S, so the balancing term adds (aux_j - sum_m aux_m probs_m) / S to ds_j.
    float inner = 0.0f;
    for (std::int64_t j = 0; j < e; ++j) inner += aux[j] * pi[j];
    for (std::int64_t j = 0; j < e; ++j) di[j] = (aux[j] - inner) / scale;  // di holds dscores first
    for (std::int64_t j = 0; j < k; ++j)
      di[index[i * k + j]] += p.renormalize ? (dgates[i * k + j] - dot) / vsum : dgates[i * k + j];
    for (std::int64_t j = 0; j < e; ++j) {
      const float s = pi[j] * scale;
      di[j] *= s * (1.0f - s);
    }
  }
}

}  // namespace moerun::cpu
