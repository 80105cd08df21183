// Causal multi-head attention on oneDNN batched matmuls over strided views of the packed
// qkv tensor (no head transposes are copied), the future masked in place, and oneDNN's
// softmax over the last axis. Shapes: qkv [b*t, 3d], heads h, head_dim hd = d / h.
// bf16 (where the CPU has bf16 instructions): q, k, v and the gradients in bf16; scores,
// softmax and its gradient in fp32, rounded to bf16 only as operands of the next product.
#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/cpu_precision.h"
#include "runtime/cpu/onednn_util.h"

namespace moerun::cpu {
namespace {

struct AttnDims {
  std::int64_t b, t, h, d, hd;
  dnnl::memory::data_type type;  // of qkv, out, dout, dqkv (f32 or bf16); scores are fp32
  std::size_t size;               // bytes per value of that type
  // A [b, h, t, hd] view of q, k or v inside qkv (row stride 3d), or of out / dout (row stride d).
  dnnl::memory::desc heads_view(std::int64_t row_stride) const {
    return strided_md({b, h, t, hd}, {t * row_stride, hd, row_stride, 1}, type);
  }
  // The transposed [b, h, hd, t] view of the same.
  dnnl::memory::desc heads_view_t(std::int64_t row_stride) const {
    return strided_md({b, h, hd, t}, {t * row_stride, hd, 1, row_stride}, type);
  }
  dnnl::memory::desc scores(dnnl::memory::data_type scores_type = kF32) const { return plain_md({b, h, t, t}, scores_type); }
  dnnl::memory::desc scores_t(dnnl::memory::data_type scores_type = kF32) const {
    return strided_md({b, h, t, t}, {h * t * t, t * t, 1, t}, scores_type);
  }
  // Where q (0), k (1) or v (2) starts inside a qkv buffer.
  std::int64_t part_offset(int which) const { return which * d * static_cast<std::int64_t>(size); }
  const void* part(const void* qkv, int which) const { return static_cast<const char*>(qkv) + part_offset(which); }
  void* part(void* qkv, int which) const { return static_cast<char*>(qkv) + part_offset(which); }
};

AttnDims dims_of(const AttentionArgs& p) {
  const std::int64_t d = p.qkv->dim(1) / 3;
  return {p.batch, p.seq, p.heads, d, d / p.heads, dnnl_type(p.qkv->dtype()), dtype_size(p.qkv->dtype())};
}

// The scores in the operands' dtype for a product with v, q or k: the fp32 tensor itself, or
// its bf16 rounding in `rounded`.
const void* scores_operand(const Tensor& scores, const AttnDims& a, Tensor& rounded) {
  if (a.type == kF32) return scores.data();
  rounded = Tensor(scores.device(), scores.shape(), DType::BF16);
  convert_values(scores, rounded);
  return rounded.data();
}

// dst = scale * src x weights, one primitive per (role, shape).
void batched_matmul(CpuDevice& dev, const std::string& key, const dnnl::memory::desc& src, const void* src_ptr,
                    const dnnl::memory::desc& wei, const void* wei_ptr, const dnnl::memory::desc& dst, void* dst_ptr,
                    float scale) {
  auto& prim = dev.cache().get(key, [&] {
    dnnl::primitive_attr attr;
    if (scale != 1.0f) attr.set_output_scales(0, {scale});
    return dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), attr, dev.engine()));
  });
  execute(dev, prim,
          {{DNNL_ARG_SRC, wrap(dev, src, src_ptr)}, {DNNL_ARG_WEIGHTS, wrap(dev, wei, wei_ptr)}, {DNNL_ARG_DST, wrap(dev, dst, dst_ptr)}});
}

dnnl::softmax_forward::primitive_desc softmax_pd(CpuDevice& dev, const dnnl::memory::desc& md) {
  return dnnl::softmax_forward::primitive_desc(dnnl::softmax_forward::desc(dnnl::prop_kind::forward_training, md, 3),
                                               dev.engine());
}

std::string shape_key(const char* role, const AttnDims& a) {
  return fmt::format("attn:{}:{}:{}:{}:{}:{}", role, a.b, a.t, a.h, a.hd, a.size);
}

}  // namespace

void attention_forward(const AttentionArgs& p) {
  if (any_bf16({p.qkv, p.out}) && !native_bf16())  // computes in fp32
    return on_fp32(p, attention_forward, {&AttentionArgs::qkv}, {&AttentionArgs::out});
  guarded("attention_forward", [&] {
    const AttnDims a = dims_of(p);
    if (a.b == 0) return;
    CpuDevice& dev = cpu_device_of(*p.qkv);
    const void* qkv = p.qkv->data();
    float* probs = f32(p.probs);
    const float scale = 1.0f / std::sqrt(static_cast<float>(a.hd));
    // scores = q k^T / sqrt(hd), in fp32 also from bf16 q and k
    batched_matmul(dev, shape_key("qk", a), a.heads_view(3 * a.d), a.part(qkv, 0), a.heads_view_t(3 * a.d), a.part(qkv, 1),
                   a.scores(), probs, scale);
    // Mask the future: position i attends to j <= i only.
    const float neg_inf = -std::numeric_limits<float>::infinity();
    const std::int64_t planes = a.b * a.h;
#pragma omp parallel for if (planes * a.t * a.t > (1 << 15))
    for (std::int64_t s = 0; s < planes; ++s) {
      float* plane = probs + s * a.t * a.t;
      for (std::int64_t i = 0; i < a.t; ++i)
        for (std::int64_t j = i + 1; j < a.t; ++j) plane[i * a.t + j] = neg_inf;
    }
    const auto smd = a.scores();
    auto& softmax = dev.cache().get(shape_key("softmax_fwd", a), [&] { return dnnl::softmax_forward(softmax_pd(dev, smd)); });
    execute(dev, softmax, {{DNNL_ARG_SRC, wrap(dev, smd, probs)}, {DNNL_ARG_DST, wrap(dev, smd, probs)}});
    // out = probs v, written straight into the [b*t, d] layout (bf16: the probabilities rounded).
    Tensor rounded;
    const void* probs_op = scores_operand(*p.probs, a, rounded);
    batched_matmul(dev, shape_key("pv", a), a.scores(a.type), probs_op, a.heads_view(3 * a.d), a.part(qkv, 2),
                   a.heads_view(a.d), p.out->data(), 1.0f);
  });
}

void attention_backward(const AttentionArgs& p) {
  if (any_bf16({p.qkv, p.dout, p.dqkv}) && !native_bf16())  // computes in fp32
    return on_fp32(p, attention_backward, {&AttentionArgs::qkv, &AttentionArgs::dout}, {&AttentionArgs::dqkv});
  guarded("attention_backward", [&] {
    const AttnDims a = dims_of(p);
    if (a.b == 0) return;
    CpuDevice& dev = cpu_device_of(*p.qkv);
    const void* qkv = p.qkv->data();
    const float* probs = f32(p.probs);
    const void* dout = p.dout->data();
    void* dqkv = p.dqkv->data();
    const float scale = 1.0f / std::sqrt(static_cast<float>(a.hd));
    const auto smd = a.scores();
    Tensor dscores_t(dev, p.probs->shape());  // fp32
    float* dscores = f32(&dscores_t);
    // dprobs = dout v^T
    batched_matmul(dev, shape_key("dp", a), a.heads_view(a.d), dout, a.heads_view_t(3 * a.d), a.part(qkv, 2), smd,
                   dscores, 1.0f);
    // dv = probs^T dout
    Tensor rounded;
    batched_matmul(dev, shape_key("dv", a), a.scores_t(a.type), scores_operand(*p.probs, a, rounded), a.heads_view(a.d),
                   dout, a.heads_view(3 * a.d), a.part(dqkv, 2), 1.0f);
    // dscores = softmax backward (in place); masked entries have probs 0 and get 0.
    auto& softmax_bwd = dev.cache().get(shape_key("softmax_bwd", a), [&] {
      return dnnl::softmax_backward(dnnl::softmax_backward::primitive_desc(dnnl::softmax_backward::desc(smd, smd, 3),
                                                                           dev.engine(), softmax_pd(dev, smd)));
    });
    execute(dev, softmax_bwd,
            {{DNNL_ARG_DST, wrap(dev, smd, probs)},
             {DNNL_ARG_DIFF_DST, wrap(dev, smd, dscores)},
             {DNNL_ARG_DIFF_SRC, wrap(dev, smd, dscores)}});
    // dq = dscores k / sqrt(hd);  dk = dscores^T q / sqrt(hd)
    const void* dscores_op = scores_operand(dscores_t, a, rounded);
    batched_matmul(dev, shape_key("dq", a), a.scores(a.type), dscores_op, a.heads_view(3 * a.d), a.part(qkv, 1),
                   a.heads_view(3 * a.d), a.part(dqkv, 0), scale);
    batched_matmul(dev, shape_key("dk", a), a.scores_t(a.type), dscores_op, a.heads_view(3 * a.d), a.part(qkv, 0),
                   a.heads_view(3 * a.d), a.part(dqkv, 1), scale);
  });
}

}  // namespace moerun::cpu

namespace moerun::cpu {

// Decoding touches each cached key and value once per new token: a memory-bound loop, no
// primitive. Scores and softmax in fp32 (double sums), as attention_forward computes them.
void attention_cached(const CachedAttentionArgs& p) {
  const std::int64_t t = p.qkv->dim(0), d = p.qkv->dim(1) / 3, h = p.heads, hd = d / h;
  float* keys = static_cast<float*>(p.keys->data());
  float* values = static_cast<float*>(p.values->data());
  const float scale = static_cast<float>(1.0 / std::sqrt(double(hd)));
  with_typed(*p.qkv, [&](const auto* qkv) {
    for (std::int64_t i = 0; i < t; ++i)  // the new k and v join the cache
      for (std::int64_t c = 0; c < d; ++c) {
        keys[(p.past + i) * d + c] = load(qkv, i * 3 * d + d + c);
        values[(p.past + i) * d + c] = load(qkv, i * 3 * d + 2 * d + c);
      }
  });
  with_typed(*p.out, [&](auto* out) {
    with_typed(*p.qkv, [&](const auto* qkv) {
#pragma omp parallel for collapse(2) if (t * h > 1)
      for (std::int64_t i = 0; i < t; ++i) {
        for (std::int64_t head = 0; head < h; ++head) {
          const std::int64_t visible = p.past + i + 1;
          std::vector<float> scores(static_cast<std::size_t>(visible));
          float top = -std::numeric_limits<float>::infinity();
          for (std::int64_t j = 0; j < visible; ++j) {
            float dot = 0.0f;
            for (std::int64_t c = 0; c < hd; ++c) dot += load(qkv, i * 3 * d + head * hd + c) * keys[j * d + head * hd + c];
            scores[static_cast<std::size_t>(j)] = dot * scale;
            top = std::max(top, scores[static_cast<std::size_t>(j)]);
          }
          double sum = 0.0;
          for (float& s : scores) sum += (s = std::exp(s - top));
          std::vector<double> acc(static_cast<std::size_t>(hd), 0.0);
          for (std::int64_t j = 0; j < visible; ++j)
            for (std::int64_t c = 0; c < hd; ++c)
              acc[static_cast<std::size_t>(c)] += double(scores[static_cast<std::size_t>(j)]) * values[j * d + head * hd + c];
          for (std::int64_t c = 0; c < hd; ++c)
            store(out, i * d + head * hd + c, static_cast<float>(acc[static_cast<std::size_t>(c)] / sum));
        }
      }
    });
  });
}

}  // namespace moerun::cpu
