// Row-indexed kernels: cross-entropy (oneDNN's softmax, then the labels' losses), top-k, gather / scatter-add of rows by index, row-wise dot products. Gather, scatter-add
// and row dot read and write f32 or bf16 rows (templated loops; arithmetic in fp32).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/cpu_precision.h"
#include "runtime/cpu/onednn_util.h"

namespace moerun::cpu {

// probs = softmax(logits) on oneDNN's softmax primitive (vectorized: at 32k-128k vocabularies a
// row loop in double took a third of the LM head's time); a row's loss is -log p[label], or,
// where p[label] is too small for fp32 to carry it, logsumexp - logit from the row in double.
void cross_entropy_forward(const CrossEntropyArgs& p) {
  const std::int64_t n = p.logits->dim(0), v = p.logits->dim(1);
  cpu::softmax_forward({.x = p.logits, .out = p.probs});
  const float* logits = f32(p.logits);
  const std::int32_t* labels = i32(p.labels);
  const float* probs = f32(p.probs);
  std::vector<double> row_loss(static_cast<std::size_t>(n), 0.0);
  bool bad_label = false;
#pragma omp parallel for if (n > 64)
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int32_t label = labels[i];
    if (label == p.ignore_label) continue;
    if (label < 0 || label >= v) {
      bad_label = true;
      continue;
    }
    const float p_label = probs[i * v + label];
    if (p_label > 1e-30f) {
      row_loss[static_cast<std::size_t>(i)] = -std::log(static_cast<double>(p_label));
      continue;
    }
    const float* li = logits + i * v;
    const double mx = *std::max_element(li, li + v);
    double sum = 0.0;
    for (std::int64_t j = 0; j < v; ++j) sum += std::exp(static_cast<double>(li[j]) - mx);
    row_loss[static_cast<std::size_t>(i)] = mx + std::log(sum) - li[label];
  }
  MOERUN_CHECK(!bad_label, KernelError, "[cross_entropy_forward] a label is outside [0, {}) and is not the ignore label {}",
               v, p.ignore_label);
  double loss_sum = 0.0, count = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    if (labels[i] == p.ignore_label) continue;
    loss_sum += row_loss[static_cast<std::size_t>(i)];  // in row order: deterministic
    count += 1.0;
  }
  float* out = f32(p.loss);
  out[0] = static_cast<float>((p.accumulate ? double(out[0]) : 0.0) + loss_sum);
  out[1] = static_cast<float>((p.accumulate ? double(out[1]) : 0.0) + count);
}

void cross_entropy_backward(const CrossEntropyArgs& p) {
  const std::int64_t n = p.probs->dim(0), v = p.probs->dim(1);
  const float* probs = f32(p.probs);
  const std::int32_t* labels = i32(p.labels);
  float* d = f32(p.dlogits);
#pragma omp parallel for if (n * v > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) {
    float* di = d + i * v;
    const std::int32_t label = labels[i];
    if (label == p.ignore_label) {
      std::fill(di, di + v, 0.0f);
      continue;
    }
    const float* pi = probs + i * v;
    for (std::int64_t j = 0; j < v; ++j) di[j] = pi[j] * p.scale;
    di[label] -= p.scale;
  }
}

void top_k(const TopKArgs& p) {
  const std::int64_t n = p.x->dim(0), m = p.x->dim(1), k = p.values->dim(1);
  const float* x = f32(p.x);
  float* values = f32(p.values);
  std::int32_t* indices = i32(p.indices);
  std::vector<std::int32_t> order(static_cast<std::size_t>(m));
  for (std::int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * m;
    std::iota(order.begin(), order.end(), 0);
    // Larger value first; equal values keep the lower column first (deterministic ties).
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [xi](std::int32_t a, std::int32_t b) {
      return xi[a] > xi[b] || (xi[a] == xi[b] && a < b);
    });
    for (std::int64_t j = 0; j < k; ++j) {
      indices[i * k + j] = order[static_cast<std::size_t>(j)];
      values[i * k + j] = xi[order[static_cast<std::size_t>(j)]];
    }
  }
}

namespace {
void check_indices(std::string_view kernel, const std::int32_t* index, std::int64_t n, std::int64_t limit) {
  for (std::int64_t i = 0; i < n; ++i) {
    MOERUN_CHECK(index[i] >= -1 && index[i] < limit, KernelError, "[{}] index[{}] = {} is outside [-1, {})", kernel, i,
                 index[i], limit);
  }
}
}  // namespace

namespace {
template <class Src, class Dst>
void gather_typed(const Src* src, const std::int32_t* index, const float* scale, Dst* dst, std::int64_t n, std::int64_t d) {
#pragma omp parallel for if (n * d > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) {
    Dst* o = dst + i * d;
    if (index[i] < 0) {  // a padding row
      for (std::int64_t j = 0; j < d; ++j) store(o, j, 0.0f);
      continue;
    }
    const Src* s = src + static_cast<std::int64_t>(index[i]) * d;
    const float w = scale ? scale[i] : 1.0f;
    for (std::int64_t j = 0; j < d; ++j) store(o, j, load(s, j) * w);
  }
}

template <class Src, class Dst>
void scatter_add_typed(const Src* src, const std::int32_t* index, const float* scale, Dst* dst, std::int64_t n,
                       std::int64_t d) {
  // Sequential over i: several rows may land on one destination, and the order of their
  // additions must not depend on threads (bit-identical runs).
  for (std::int64_t i = 0; i < n; ++i) {
    if (index[i] < 0) continue;  // a padding row
    const Src* s = src + i * d;
    Dst* o = dst + static_cast<std::int64_t>(index[i]) * d;
    const float w = scale ? scale[i] : 1.0f;
#pragma omp simd
    for (std::int64_t j = 0; j < d; ++j) store(o, j, load(o, j) + load(s, j) * w);
  }
}
}  // namespace

void gather_rows(const IndexRowsArgs& p) {
  const std::int64_t n = p.dst->dim(0), d = p.dst->dim(1);
  const std::int32_t* index = i32(p.index);
  check_indices("gather_rows", index, n, p.src->dim(0));
  const float* scale = p.scale ? f32(p.scale) : nullptr;
  if (scale == nullptr && p.src->dtype() == p.dst->dtype()) {  // rows of bytes, any dtype
    const auto row_bytes = static_cast<std::size_t>(d) * dtype_size(p.dst->dtype());
    const auto* src = static_cast<const char*>(p.src->data());
    auto* dst = static_cast<char*>(p.dst->data());
#pragma omp parallel for if (n * d > (1 << 15))
    for (std::int64_t i = 0; i < n; ++i) {
      char* o = dst + static_cast<std::size_t>(i) * row_bytes;
      if (index[i] < 0) {
        std::memset(o, 0, row_bytes);
      } else {
        std::memcpy(o, src + static_cast<std::size_t>(index[i]) * row_bytes, row_bytes);
      }
    }
    return;
  }
  with_typed(*p.src, [&](const auto* src) {
    with_typed(*p.dst, [&](auto* dst) { gather_typed(src, index, scale, dst, n, d); });
  });
}

void scatter_add_rows(const IndexRowsArgs& p) {
  const std::int64_t n = p.src->dim(0), d = p.src->dim(1);
  const std::int32_t* index = i32(p.index);
  check_indices("scatter_add_rows", index, n, p.dst->dim(0));
  const float* scale = p.scale ? f32(p.scale) : nullptr;
  with_typed(*p.src, [&](const auto* src) {
    with_typed(*p.dst, [&](auto* dst) { scatter_add_typed(src, index, scale, dst, n, d); });
  });
}

void row_dot(const RowDotArgs& p) {
  const std::int64_t n = p.a->dim(0), d = p.a->dim(1);
  float* out = f32(p.out);
  with_typed(*p.a, [&](const auto* a) {
    with_typed(*p.b, [&](const auto* b) {
#pragma omp parallel for if (n * d > (1 << 15))
      for (std::int64_t i = 0; i < n; ++i) {
        float s = 0.0f;
        for (std::int64_t j = 0; j < d; ++j) s += load(a, i * d + j) * load(b, i * d + j);
        out[i] = s;
      }
    });
  });
}

}  // namespace moerun::cpu
