// Causal multi-head attention on oneDNN batched matmuls over strided views of the packed
// qkv tensor (no head transposes are copied), the future masked in place, and oneDNN's
// softmax over the last axis. Shapes: qkv [b*t, 3d], heads h, head_dim hd = d / h.
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
  // A [b, h, t, hd] view of q, k or v inside qkv (row stride 3d), or of out / dout (row stride d).
  dnnl::memory::desc heads_view(std::int64_t row_stride) const { return strided_md({b, h, t, hd}, {t * row_stride, hd, row_stride, 1}); }
  // The transposed [b, h, hd, t] view of the same.
  dnnl::memory::desc heads_view_t(std::int64_t row_stride) const { return strided_md({b, h, hd, t}, {t * row_stride, hd, 1, row_stride}); }
  dnnl::memory::desc scores() const { return plain_md({b, h, t, t}); }
  dnnl::memory::desc scores_t() const { return strided_md({b, h, t, t}, {h * t * t, t * t, 1, t}); }
};

AttnDims dims_of(const AttentionArgs& p) {
  const std::int64_t d = p.qkv->dim(1) / 3;
  return {p.batch, p.seq, p.heads, d, d / p.heads};
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

std::string shape_key(const char* role, const AttnDims& a) { return fmt::format("attn:{}:{}:{}:{}:{}", role, a.b, a.t, a.h, a.hd); }

}  // namespace

void attention_forward(const AttentionArgs& p) {
  if (any_bf16({p.qkv, p.out})) {  // computes in fp32
    F32Staging staged;
    AttentionArgs q = p;
    q.qkv = staged.in(p.qkv);
    q.out = staged.out(p.out);
    return attention_forward(q);
  }
  guarded("attention_forward", [&] {
    const AttnDims a = dims_of(p);
    if (a.b == 0) return;
    CpuDevice& dev = cpu_device_of(*p.qkv);
    const float* qkv = f32(p.qkv);
    float* probs = f32(p.probs);
    const float scale = 1.0f / std::sqrt(static_cast<float>(a.hd));
    // scores = q k^T / sqrt(hd)
    batched_matmul(dev, shape_key("qk", a), a.heads_view(3 * a.d), qkv, a.heads_view_t(3 * a.d), qkv + a.d, a.scores(),
                   probs, scale);
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
    // out = probs v, written straight into the [b*t, d] layout.
    batched_matmul(dev, shape_key("pv", a), smd, probs, a.heads_view(3 * a.d), qkv + 2 * a.d, a.heads_view(a.d),
                   f32(p.out), 1.0f);
  });
}

void attention_backward(const AttentionArgs& p) {
  if (any_bf16({p.qkv, p.dout, p.dqkv})) {  // computes in fp32
    F32Staging staged;
    AttentionArgs q = p;
    q.qkv = staged.in(p.qkv);
    q.dout = staged.in(p.dout);
    q.dqkv = staged.out(p.dqkv);
    return attention_backward(q);
  }
  guarded("attention_backward", [&] {
    const AttnDims a = dims_of(p);
    if (a.b == 0) return;
    CpuDevice& dev = cpu_device_of(*p.qkv);
    const float* qkv = f32(p.qkv);
    const float* probs = f32(p.probs);
    const float* dout = f32(p.dout);
    float* dqkv = f32(p.dqkv);
    const float scale = 1.0f / std::sqrt(static_cast<float>(a.hd));
    const auto smd = a.scores();
    float* dscores = static_cast<float*>(dev.scratch(static_cast<std::size_t>(a.b * a.h * a.t * a.t) * sizeof(float)));
    // dprobs = dout v^T
    batched_matmul(dev, shape_key("dp", a), a.heads_view(a.d), dout, a.heads_view_t(3 * a.d), qkv + 2 * a.d, smd,
                   dscores, 1.0f);
    // dv = probs^T dout
    batched_matmul(dev, shape_key("dv", a), a.scores_t(), probs, a.heads_view(a.d), dout, a.heads_view(3 * a.d),
                   dqkv + 2 * a.d, 1.0f);
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
    batched_matmul(dev, shape_key("dq", a), smd, dscores, a.heads_view(3 * a.d), qkv + a.d, a.heads_view(3 * a.d), dqkv,
                   scale);
    batched_matmul(dev, shape_key("dk", a), a.scores_t(), dscores, a.heads_view(3 * a.d), qkv, a.heads_view(3 * a.d),
                   dqkv + a.d, scale);
  });
}

}  // namespace moerun::cpu
