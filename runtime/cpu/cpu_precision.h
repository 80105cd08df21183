// How the oneDNN CPU backend handles bf16. Where the CPU has bf16 instructions (oneDNN isa
// avx512_core_bf16 or AMX: Zen 4, Zen 5, Cooper Lake, Sapphire Rapids) matmuls and
// activations run on oneDNN's bf16 kernels. Elsewhere (Zen 3, AVX2 only) bf16 tensors are
// still stored and exchanged as bf16, and each kernel computes on fp32 copies (F32Staging).
// Kernels whose math stays fp32 by design (norm statistics, attention softmax, router,
// cross-entropy) use the same staging on every CPU. Backend-private.
#pragma once

#include <deque>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "runtime/bfloat16.h"
#include "runtime/tensor.h"

namespace moerun::cpu {

// True when oneDNN runs bf16 natively here (honours ONEDNN_MAX_CPU_ISA, which tests use to
// take the fp32 path on a bf16-capable CPU).
bool native_bf16();
// "native (oneDNN isa avx512_core_bf16)" or "emulated in fp32 (...)": the start-up line's words.
std::string bf16_path();

bool any_bf16(std::initializer_list<const Tensor*> tensors);
// True when every non-null tensor is f32.
inline bool all_f32(std::initializer_list<const Tensor*> tensors) { return !any_bf16(tensors); }

// Stands fp32 copies in for bf16 arguments of a kernel that computes in fp32: in() converts
// an input, out() gives an fp32 output (converted from the original first when `read`, for
// accumulating kernels), and the destructor converts the outputs back. f32 and null tensors
// pass through untouched, so the kernel sees the caller's own buffers where it can.
class F32Staging {
 public:
  F32Staging() = default;
  F32Staging(const F32Staging&) = delete;
  F32Staging& operator=(const F32Staging&) = delete;
  ~F32Staging() noexcept(false);

  const Tensor* in(const Tensor* t);
  Tensor* out(Tensor* t, bool read = false);

 private:
  std::deque<Tensor> copies_;                    // stable addresses
  std::vector<std::pair<Tensor*, Tensor*>> outputs_;  // (fp32 copy, caller's bf16 tensor)
};

// Runs kernel(args) with fp32 copies standing in for the bf16 tensors among the named input
// and output members: the fallback of a kernel that computes in fp32.
template <class Args, class Kernel>
void on_fp32(const Args& args, Kernel&& kernel, std::initializer_list<const Tensor* Args::*> inputs,
             std::initializer_list<Tensor* Args::*> outputs) {
  F32Staging staged;
  Args copy = args;
  for (auto member : inputs) copy.*member = staged.in(args.*member);
  for (auto member : outputs) copy.*member = staged.out(args.*member);
  kernel(copy);
}

// dst = src in dst's dtype (f32 <-> bf16, round to nearest even), same element count.
void convert_values(const Tensor& src, Tensor& dst);

// Element access for loops templated over the stored type (float or bfloat16).
inline float load(const float* p, std::int64_t i) { return p[i]; }
inline float load(const bfloat16* p, std::int64_t i) { return bf16_to_float(p[i]); }
inline void store(float* p, std::int64_t i, float v) { p[i] = v; }
inline void store(bfloat16* p, std::int64_t i, float v) { p[i] = float_to_bf16(v); }

// Calls fn with a typed pointer (const float* or const bfloat16*) to t's data.
template <class Fn>
decltype(auto) with_typed(const Tensor& t, Fn&& fn) {
  if (t.dtype() == DType::BF16) return fn(static_cast<const bfloat16*>(t.data()));
  return fn(static_cast<const float*>(t.data()));
}
template <class Fn>
decltype(auto) with_typed(Tensor& t, Fn&& fn) {
  if (t.dtype() == DType::BF16) return fn(static_cast<bfloat16*>(t.data()));
  return fn(static_cast<float*>(t.data()));
}

}  // namespace moerun::cpu
