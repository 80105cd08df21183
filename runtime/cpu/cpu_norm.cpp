// Row-wise softmax and layer norm on oneDNN primitives; RMS norm (no primitive in
// oneDNN 2.x) as a loop over rows.
#include <fmt/format.h>

#include <cmath>

#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/cpu_precision.h"
#include "runtime/cpu/onednn_util.h"

namespace moerun::cpu {
namespace {

dnnl::softmax_forward::primitive_desc softmax_fwd_pd(CpuDevice& dev, const dnnl::memory::desc& md) {
  return dnnl::softmax_forward::primitive_desc(
      dnnl::softmax_forward::desc(dnnl::prop_kind::forward_training, md, 1), dev.engine());
}

const auto kLayerNormFlags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;

dnnl::layer_normalization_forward::primitive_desc layer_norm_fwd_pd(CpuDevice& dev, const dnnl::memory::desc& md,
                                                                    float eps) {
  return dnnl::layer_normalization_forward::primitive_desc(
      dnnl::layer_normalization_forward::desc(dnnl::prop_kind::forward_training, md, eps, kLayerNormFlags),
      dev.engine());
}

}  // namespace

void softmax_forward(const SoftmaxArgs& p) {
  if (any_bf16({p.x, p.out}))  // computes in fp32
    return on_fp32(p, softmax_forward, {&SoftmaxArgs::x}, {&SoftmaxArgs::out});
  guarded("softmax_forward", [&] {
    CpuDevice& dev = cpu_device_of(*p.x);
    const std::int64_t n = p.x->dim(0), m = p.x->dim(1);
    if (n == 0 || m == 0) return;
    const auto md = plain_md({n, m});
    auto& prim = dev.cache().get(fmt::format("softmax_fwd:{}:{}", n, m),
                                 [&] { return dnnl::softmax_forward(softmax_fwd_pd(dev, md)); });
    execute(dev, prim, {{DNNL_ARG_SRC, wrap(dev, md, p.x->data())}, {DNNL_ARG_DST, wrap(dev, md, p.out->data())}});
  });
}

void softmax_backward(const SoftmaxArgs& p) {
  if (any_bf16({p.y, p.dy, p.out}))  // computes in fp32
    return on_fp32(p, softmax_backward, {&SoftmaxArgs::y, &SoftmaxArgs::dy}, {&SoftmaxArgs::out});
  guarded("softmax_backward", [&] {
    CpuDevice& dev = cpu_device_of(*p.y);
    const std::int64_t n = p.y->dim(0), m = p.y->dim(1);
    if (n == 0 || m == 0) return;
    const auto md = plain_md({n, m});
    auto& prim = dev.cache().get(fmt::format("softmax_bwd:{}:{}", n, m), [&] {
      return dnnl::softmax_backward(dnnl::softmax_backward::primitive_desc(
          dnnl::softmax_backward::desc(md, md, 1), dev.engine(), softmax_fwd_pd(dev, md)));
    });
    execute(dev, prim,
            {{DNNL_ARG_DST, wrap(dev, md, p.y->data())},
             {DNNL_ARG_DIFF_DST, wrap(dev, md, p.dy->data())},
             {DNNL_ARG_DIFF_SRC, wrap(dev, md, p.out->data())}});
  });
}

void layer_norm_forward(const LayerNormArgs& p) {
  if (any_bf16({p.x, p.y}))  // computes in fp32
    return on_fp32(p, layer_norm_forward, {&LayerNormArgs::x}, {&LayerNormArgs::y});
  guarded("layer_norm_forward", [&] {
    CpuDevice& dev = cpu_device_of(*p.x);
    const std::int64_t n = p.x->dim(0), d = p.x->dim(1);
    if (n == 0) return;
    const auto md = plain_md({n, d});
    const auto stat_md = plain_md({n});
    const auto param_md = plain_md({d});
    auto& prim = dev.cache().get(fmt::format("layer_norm_fwd:{}:{}:{}", n, d, p.epsilon), [&] {
      return dnnl::layer_normalization_forward(layer_norm_fwd_pd(dev, md, p.epsilon));
    });
    execute(dev, prim,
            {{DNNL_ARG_SRC, wrap(dev, md, p.x->data())},
             {DNNL_ARG_DST, wrap(dev, md, p.y->data())},
             {DNNL_ARG_MEAN, wrap(dev, stat_md, p.mean->data())},
             {DNNL_ARG_VARIANCE, wrap(dev, stat_md, p.variance->data())},
             {DNNL_ARG_SCALE, wrap(dev, param_md, p.gamma->data())},
             {DNNL_ARG_SHIFT, wrap(dev, param_md, p.beta->data())}});
  });
}

void layer_norm_backward(const LayerNormArgs& p) {
  if (any_bf16({p.x, p.dy, p.dx}))  // computes in fp32
    return on_fp32(p, layer_norm_backward, {&LayerNormArgs::x, &LayerNormArgs::dy}, {&LayerNormArgs::dx});
  guarded("layer_norm_backward", [&] {
    CpuDevice& dev = cpu_device_of(*p.x);
    const std::int64_t n = p.x->dim(0), d = p.x->dim(1);
    if (n == 0) {
      if (!p.accumulate_param_grads) {
        p.dgamma->zero();
        p.dbeta->zero();
      }
      return;
    }
    const auto md = plain_md({n, d});
    const auto stat_md = plain_md({n});
    const auto param_md = plain_md({d});
    auto& prim = dev.cache().get(fmt::format("layer_norm_bwd:{}:{}:{}", n, d, p.epsilon), [&] {
      dnnl::layer_normalization_backward::desc desc(dnnl::prop_kind::backward, md, md, p.epsilon, kLayerNormFlags);
      return dnnl::layer_normalization_backward(dnnl::layer_normalization_backward::primitive_desc(
          desc, dev.engine(), layer_norm_fwd_pd(dev, md, p.epsilon)));
    });
    // oneDNN overwrites the parameter gradients; to accumulate, write them to scratch first.
    float* dgamma = f32(p.dgamma);
    float* dbeta = f32(p.dbeta);
    if (p.accumulate_param_grads) {
      float* tmp = static_cast<float*>(dev.scratch(2 * static_cast<std::size_t>(d) * sizeof(float)));
      dgamma = tmp;
      dbeta = tmp + d;
    }
    execute(dev, prim,
            {{DNNL_ARG_SRC, wrap(dev, md, p.x->data())},
             {DNNL_ARG_DIFF_DST, wrap(dev, md, p.dy->data())},
             {DNNL_ARG_MEAN, wrap(dev, stat_md, p.mean->data())},
             {DNNL_ARG_VARIANCE, wrap(dev, stat_md, p.variance->data())},
             {DNNL_ARG_SCALE, wrap(dev, param_md, p.gamma->data())},
             {DNNL_ARG_SHIFT, wrap(dev, param_md, p.beta ? p.beta->data() : p.gamma->data())},
             {DNNL_ARG_DIFF_SRC, wrap(dev, md, p.dx->data())},
             {DNNL_ARG_DIFF_SCALE, wrap(dev, param_md, dgamma)},
             {DNNL_ARG_DIFF_SHIFT, wrap(dev, param_md, dbeta)}});
    if (p.accumulate_param_grads) {
      float* g = f32(p.dgamma);
      float* b = f32(p.dbeta);
      for (std::int64_t j = 0; j < d; ++j) {
        g[j] += dgamma[j];
        b[j] += dbeta[j];
      }
    }
  });
}

void rms_norm_forward(const RmsNormArgs& p) {
  if (any_bf16({p.x, p.y}))  // computes in fp32
    return on_fp32(p, rms_norm_forward, {&RmsNormArgs::x}, {&RmsNormArgs::y});
  const std::int64_t n = p.x->dim(0), d = p.x->dim(1);
  const float* x = f32(p.x);
  const float* gamma = f32(p.gamma);
  float* y = f32(p.y);
  float* rstd = f32(p.rstd);
#pragma omp parallel for if (n * d > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    float ss = 0.0f;
    for (std::int64_t j = 0; j < d; ++j) ss += xi[j] * xi[j];
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(d) + p.epsilon);
    rstd[i] = r;
    float* yi = y + i * d;
    for (std::int64_t j = 0; j < d; ++j) yi[j] = xi[j] * r * gamma[j];
  }
}

void rms_norm_backward(const RmsNormArgs& p) {
  if (any_bf16({p.x, p.dy, p.dx}))  // computes in fp32
    return on_fp32(p, rms_norm_backward, {&RmsNormArgs::x, &RmsNormArgs::dy}, {&RmsNormArgs::dx});
  // With xh = x * r: dx = r * (g*dy - xh * mean(g*dy*xh)), dgamma = sum_rows(dy * xh).
  const std::int64_t n = p.x->dim(0), d = p.x->dim(1);
  const float* x = f32(p.x);
  const float* gamma = f32(p.gamma);
  const float* dy = f32(p.dy);
  const float* rstd = f32(p.rstd);
  float* dx = f32(p.dx);
  float* dgamma = f32(p.dgamma);
  if (!p.accumulate_param_grads) p.dgamma->zero();
  for (std::int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    const float* dyi = dy + i * d;
    const float r = rstd[i];
    float dot = 0.0f;
    for (std::int64_t j = 0; j < d; ++j) dot += gamma[j] * dyi[j] * xi[j] * r;
    const float mean_dot = dot / static_cast<float>(d);
    float* dxi = dx + i * d;
    for (std::int64_t j = 0; j < d; ++j) {
      const float xh = xi[j] * r;
      dgamma[j] += dyi[j] * xh;
      dxi[j] = r * (gamma[j] * dyi[j] - xh * mean_dot);
    }
  }
}

}  // namespace moerun::cpu
