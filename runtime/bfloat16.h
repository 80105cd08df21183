// bfloat16 on the host: the top 16 bits of an IEEE float, converted with round-to-nearest-even
// (NaN stays NaN). Used by Tensor's host copies and by backends without native bf16 code.
// Does not own any device math: kernels convert through the `convert` kernel.
#pragma once

#include <cstdint>
#include <cstring>

namespace moerun {

struct bfloat16 {
  std::uint16_t bits = 0;
};

inline float bf16_to_float(bfloat16 v) {
  const std::uint32_t word = static_cast<std::uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &word, sizeof(f));
  return f;
}

inline bfloat16 float_to_bf16(float f) {
  std::uint32_t word;
  std::memcpy(&word, &f, sizeof(word));
  if ((word & 0x7f800000u) == 0x7f800000u && (word & 0x007fffffu) != 0) {
    return {static_cast<std::uint16_t>((word >> 16) | 0x0040u)};  // quiet NaN
  }
  word += 0x7fffu + ((word >> 16) & 1u);  // round to nearest, ties to even
  return {static_cast<std::uint16_t>(word >> 16)};
}

// The relative rounding error of one bf16 value: 2^-8 (8 significant bits).
inline constexpr double kBf16Epsilon = 1.0 / 256.0;

}  // namespace moerun
