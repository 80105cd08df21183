// Small helpers shared by the oneDNN CPU kernels: memory descriptors for plain row-major
// and strided views, wrapping tensor buffers without copies, executing on the stream,
// and turning dnnl::error into KernelError. Backend-private.
#pragma once

#include <dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "runtime/error.h"
#include "runtime/tensor.h"
#include "runtime/cpu/cpu_device.h"

namespace moerun::cpu {

using dims = dnnl::memory::dims;
using f32_t = dnnl::memory::data_type;
inline constexpr auto kF32 = dnnl::memory::data_type::f32;

inline constexpr auto kBF16 = dnnl::memory::data_type::bf16;
inline dnnl::memory::data_type dnnl_type(DType t) { return t == DType::BF16 ? kBF16 : kF32; }

inline dnnl::memory::desc plain_md(dims d, dnnl::memory::data_type type = kF32) {
  dims strides(d.size(), 1);
  for (int i = static_cast<int>(d.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * d[i + 1];
  return dnnl::memory::desc(d, type, strides);
}
inline dnnl::memory::desc strided_md(dims d, dims strides, dnnl::memory::data_type type = kF32) {
  return dnnl::memory::desc(d, type, strides);
}

inline dnnl::memory wrap(CpuDevice& dev, const dnnl::memory::desc& md, const void* ptr) {
  return dnnl::memory(md, dev.engine(), const_cast<void*>(ptr));
}

inline float* f32(Tensor* t) { return static_cast<float*>(t->data()); }
inline const float* f32(const Tensor* t) { return static_cast<const float*>(t->data()); }
inline const std::int32_t* i32(const Tensor* t) { return static_cast<const std::int32_t*>(t->data()); }
inline std::int32_t* i32(Tensor* t) { return static_cast<std::int32_t*>(t->data()); }

inline void execute(CpuDevice& dev, dnnl::primitive& p, std::unordered_map<int, dnnl::memory> args) {
  p.execute(dev.stream(), args);
}

// probs = softmax(x) over one row of n values; returns logsumexp(x). Sums in double.
inline float softmax_row(const float* x, float* probs, std::int64_t n) {
  const float mx = *std::max_element(x, x + n);
  double sum = 0.0;
  for (std::int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(x[j] - mx));
  const float lse = mx + static_cast<float>(std::log(sum));
  for (std::int64_t j = 0; j < n; ++j) probs[j] = std::exp(x[j] - lse);
  return lse;
}

// Runs fn, turning oneDNN's errors into a KernelError that names the kernel.
template <class Fn>
auto guarded(std::string_view kernel, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const dnnl::error& e) {
    MOERUN_THROW(KernelError, "[{}] oneDNN failed: {} (status {})", kernel, e.what(), static_cast<int>(e.status));
  }
}

}  // namespace moerun::cpu
