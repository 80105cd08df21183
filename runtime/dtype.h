// Element types a Tensor can hold. fp32 for master weights, gradients, optimizer state and
// the residual stream; bf16 for activations, matmul operands and the token exchange under
// train.precision = bf16 (docs/precision.md); i32 holds indices; u8 holds packed rows of
// bytes (fp8 dispatch: e4m3 values with their fp32 scales, kernels/quantize.h).
#pragma once

#include <cstddef>
#include <string_view>

namespace moerun {

enum class DType { F32, BF16, I32, U8 };

constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::U8: return "u8";
  }
  return "?";
}

constexpr bool is_floating(DType t) { return t == DType::F32 || t == DType::BF16; }


}  // namespace moerun
