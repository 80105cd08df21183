// Point-wise kernels: activations and binary ops on oneDNN's eltwise and binary
// primitives (f32, or bf16 where the CPU has bf16 instructions; staged through fp32 elsewhere); axpy, row sums, norms, non-finite counts and AdamW as plain vectorizable
// loops (memory-bound, no primitive in oneDNN), threaded with OpenMP for large tensors.
#include <fmt/format.h>

#include <cmath>

#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/cpu_precision.h"
#include "runtime/cpu/onednn_util.h"

namespace moerun::cpu {
namespace {

constexpr std::int64_t kParallelThreshold = 1 << 15;  // elements; below it threads cost more than they save

dnnl::algorithm eltwise_algorithm(Activation a) {
  return a == Activation::Gelu ? dnnl::algorithm::eltwise_gelu_erf : dnnl::algorithm::eltwise_swish;
}
float eltwise_alpha(Activation a) { return a == Activation::Silu ? 1.0f : 0.0f; }  // swish(x) = x * sigmoid(alpha x)

dnnl::eltwise_forward::primitive_desc eltwise_fwd_pd(CpuDevice& dev, dnnl::algorithm alg, float alpha, std::int64_t n,
                                                    dnnl::memory::data_type type) {
  const auto md = plain_md({n}, type);
  return dnnl::eltwise_forward::primitive_desc(
      dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, alg, md, alpha, 0.0f), dev.engine());
}

// Calls fn(offset, size) for the power-of-two pieces of n, largest first. Element-wise kernels
// run piece by piece, so that a primitive keyed by size is needed for at most 63 sizes however
// n varies (expert row counts change every step; a primitive per count grew without bound).
template <class Fn>
void for_pow2_pieces(std::int64_t n, Fn&& fn) {
  std::int64_t offset = 0;
  for (int bit = 62; bit >= 0; --bit) {
    const std::int64_t size = std::int64_t{1} << bit;
    if ((n & size) == 0) continue;
    fn(offset, size);
    offset += size;
  }
}

const void* at(const Tensor& t, std::int64_t element) {
  return static_cast<const char*>(t.data()) + element * static_cast<std::int64_t>(dtype_size(t.dtype()));
}

// x and y share one dtype (checked by the front ends).
void eltwise_forward(dnnl::algorithm alg, float alpha, const Tensor& x, Tensor& y) {
  if (x.dtype() == DType::BF16 && !native_bf16()) {
    F32Staging staged;
    return eltwise_forward(alg, alpha, *staged.in(&x), *staged.out(&y));
  }
  CpuDevice& dev = cpu_device_of(x);
  const std::int64_t n = x.numel();
  if (n == 0) return;
  const auto type = dnnl_type(x.dtype());
  for_pow2_pieces(n, [&](std::int64_t offset, std::int64_t size) {
    const auto md = plain_md({size}, type);
    const std::string key = fmt::format("eltwise_fwd:{}:{}:{}:{}", static_cast<int>(alg), alpha, size, dtype_name(x.dtype()));
    auto& prim = dev.cache().get(key, [&] { return dnnl::eltwise_forward(eltwise_fwd_pd(dev, alg, alpha, size, type)); });
    execute(dev, prim, {{DNNL_ARG_SRC, wrap(dev, md, at(x, offset))}, {DNNL_ARG_DST, wrap(dev, md, at(y, offset))}});
  });
}

// dx = dy * f'(x); dx may alias dy.
void eltwise_backward(dnnl::algorithm alg, float alpha, const Tensor& x, const Tensor& dy, Tensor& dx) {
  if (x.dtype() == DType::BF16 && !native_bf16()) {
    F32Staging staged;
    return eltwise_backward(alg, alpha, *staged.in(&x), *staged.in(&dy), *staged.out(&dx));
  }
  CpuDevice& dev = cpu_device_of(x);
  const std::int64_t n = x.numel();
  if (n == 0) return;
  const auto type = dnnl_type(x.dtype());
  for_pow2_pieces(n, [&](std::int64_t offset, std::int64_t size) {
    const auto md = plain_md({size}, type);
    const std::string key = fmt::format("eltwise_bwd:{}:{}:{}:{}", static_cast<int>(alg), alpha, size, dtype_name(x.dtype()));
    auto& prim = dev.cache().get(key, [&] {
      dnnl::eltwise_backward::desc desc(alg, md, md, alpha, 0.0f);
      return dnnl::eltwise_backward(
          dnnl::eltwise_backward::primitive_desc(desc, dev.engine(), eltwise_fwd_pd(dev, alg, alpha, size, type)));
    });
    execute(dev, prim,
            {{DNNL_ARG_SRC, wrap(dev, md, at(x, offset))},
             {DNNL_ARG_DIFF_DST, wrap(dev, md, at(dy, offset))},
             {DNNL_ARG_DIFF_SRC, wrap(dev, md, at(dx, offset))}});
  });
}

// One primitive when all three share a dtype the CPU computes in; mixed dtypes (a bf16 branch
// added to the fp32 residual stream) are staged through fp32.
void binary_op(dnnl::algorithm alg, const Tensor& a, const Tensor& b, Tensor& out) {
  const bool one_type = a.dtype() == b.dtype() && a.dtype() == out.dtype();
  if (any_bf16({&a, &b, &out}) && !(one_type && native_bf16())) {
    F32Staging staged;
    return binary_op(alg, *staged.in(&a), *staged.in(&b), *staged.out(&out));
  }
  CpuDevice& dev = cpu_device_of(a);
  const std::int64_t n = a.numel();
  if (n == 0) return;
  const bool broadcast_row = b.shape() != a.shape();
  const auto type = dnnl_type(a.dtype());
  // Same shapes: element-wise, in power-of-two pieces. A broadcast row: one primitive per
  // [rows, cols] (its callers' shapes are fixed by the model).
  const std::int64_t cols = broadcast_row ? b.numel() : 1;
  auto run = [&](std::int64_t offset, std::int64_t rows) {
    const auto a_md = plain_md({rows, cols}, type);
    const auto b_md = plain_md({broadcast_row ? 1 : rows, cols}, type);
    auto& prim = dev.cache().get(fmt::format("binary:{}:{}:{}:{:d}:{}", static_cast<int>(alg), rows, cols, broadcast_row,
                                             dtype_name(a.dtype())), [&] {
      return dnnl::binary(dnnl::binary::primitive_desc(dnnl::binary::desc(alg, a_md, b_md, a_md), dev.engine()));
    });
    execute(dev, prim,
            {{DNNL_ARG_SRC_0, wrap(dev, a_md, at(a, offset))},
             {DNNL_ARG_SRC_1, wrap(dev, b_md, broadcast_row ? b.data() : at(b, offset))},
             {DNNL_ARG_DST, wrap(dev, a_md, at(out, offset))}});
  };
  if (broadcast_row) return run(0, n / cols);
  for_pow2_pieces(n, run);
}

}  // namespace

void activation_forward(const ActivationArgs& p) {
  guarded("activation_forward", [&] { eltwise_forward(eltwise_algorithm(p.activation), eltwise_alpha(p.activation), *p.x, *p.out); });
}

void activation_backward(const ActivationArgs& p) {
  guarded("activation_backward",
          [&] { eltwise_backward(eltwise_algorithm(p.activation), eltwise_alpha(p.activation), *p.x, *p.dy, *p.out); });
}

void swiglu_forward(const SwiGluArgs& p) {
  guarded("swiglu_forward", [&] {
    eltwise_forward(dnnl::algorithm::eltwise_swish, 1.0f, *p.gate, *p.y);  // y = silu(gate)
    binary_op(dnnl::algorithm::binary_mul, *p.y, *p.up, *p.y);            // y *= up
  });
}

void swiglu_backward(const SwiGluArgs& p) {
  guarded("swiglu_backward", [&] {
    binary_op(dnnl::algorithm::binary_mul, *p.dy, *p.up, *p.dgate);                     // dgate = dy * up
    eltwise_backward(dnnl::algorithm::eltwise_swish, 1.0f, *p.gate, *p.dgate, *p.dgate);  // dgate *= silu'(gate)
    eltwise_forward(dnnl::algorithm::eltwise_swish, 1.0f, *p.gate, *p.dup);               // dup = silu(gate)
    binary_op(dnnl::algorithm::binary_mul, *p.dup, *p.dy, *p.dup);                      // dup *= dy
  });
}

void binary(const BinaryArgs& p) {
  guarded("binary", [&] {
    binary_op(p.op == BinaryOp::Add ? dnnl::algorithm::binary_add : dnnl::algorithm::binary_mul, *p.a, *p.b, *p.out);
  });
}

void axpy(const AxpyArgs& p) {
  const float* x = f32(p.x);
  float* y = f32(p.y);
  const std::int64_t n = p.x->numel();
  const float alpha = p.alpha;
#pragma omp parallel for simd if (n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void scale(Tensor& t, float alpha) {
  guarded("scale", [&] { eltwise_forward(dnnl::algorithm::eltwise_linear, alpha, t, t); });
}

void sum_rows(const SumRowsArgs& p) {
  const std::int64_t rows = p.x->dim(0), cols = p.x->dim(1);
  const float* x = f32(p.x);
  float* out = f32(p.out);
  if (!p.accumulate) p.out->zero();
  // Columns in parallel, rows in order: the sum order, hence the result, is fixed.
#pragma omp parallel for if (rows * cols > kParallelThreshold)
  for (std::int64_t c0 = 0; c0 < cols; c0 += 64) {
    const std::int64_t c1 = std::min(cols, c0 + 64);
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * cols;
#pragma omp simd
      for (std::int64_t c = c0; c < c1; ++c) out[c] += row[c];
    }
  }
}

namespace {
void reduce_into(const ReduceArgs& p, double value) {
  float* out = f32(p.out);
  out[0] = static_cast<float>((p.accumulate ? double(out[0]) : 0.0) + double(p.scale) * value);
}
}  // namespace

void sum_squares(const ReduceArgs& p) {
  const float* x = f32(p.x);
  const std::int64_t n = p.x->numel();
  double total = 0.0;
  // Fixed-size chunks summed in order keep the result independent of the thread count.
  constexpr std::int64_t kChunk = 4096;
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
#pragma omp parallel for if (n > kParallelThreshold)
  for (std::int64_t c = 0; c < chunks; ++c) {
    double s = 0.0;
    const std::int64_t end = std::min(n, (c + 1) * kChunk);
    for (std::int64_t i = c * kChunk; i < end; ++i) s += static_cast<double>(x[i]) * x[i];
    partial[static_cast<std::size_t>(c)] = s;
  }
  for (double s : partial) total += s;
  reduce_into(p, total);
}

void count_nonfinite(const ReduceArgs& p) {
  const float* x = f32(p.x);
  const std::int64_t n = p.x->numel();
  std::int64_t bad = 0;
#pragma omp parallel for reduction(+ : bad) if (n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) bad += std::isfinite(x[i]) ? 0 : 1;
  reduce_into(p, double(bad));
}

void adamw(const AdamWArgs& p) {
  float* w = f32(p.param);
  const float* g = f32(p.grad);
  float* m = f32(p.m);
  float* v = f32(p.v);
  const std::int64_t n = p.param->numel();
  const float b1 = p.beta1, b2 = p.beta2, lr = p.lr, eps = p.epsilon, wd = p.weight_decay;
  const float c1 = 1.0f / (1.0f - static_cast<float>(std::pow(static_cast<double>(b1), static_cast<double>(p.step))));
  const float c2 = 1.0f / (1.0f - static_cast<float>(std::pow(static_cast<double>(b2), static_cast<double>(p.step))));
#pragma omp parallel for simd if (n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w[i] -= lr * ((mi * c1) / (std::sqrt(vi * c2) + eps) + wd * w[i]);
  }
}

}  // namespace moerun::cpu
