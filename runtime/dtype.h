// Element types a Tensor can hold. fp32 is what the kernels compute in today; bf16 is
// reserved (storage and size are known, no kernel accepts it yet); i32 holds indices.
#pragma once

#include <cstddef>
#include <string_view>

namespace moerun {

enum class DType { F32, BF16, I32 };

constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::I32: return 4;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
  }
  return "?";
}

}  // namespace moerun
