// fp8 e4m3 ("E4M3FN": 4 exponent bits, bias 7, 3 mantissa bits, no infinities, largest finite
// 448, smallest subnormal 2^-9) on the host: encode with round-to-nearest-even and saturation,
// decode exactly. The packed rows of parallel.dispatch_dtype = fp8 use it (kernels/quantize.h);
// the byte 0x7f / 0xff is NaN.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace moerun {

inline constexpr float kFp8E4M3Max = 448.0f;

inline float fp8_e4m3_to_float(std::uint8_t code) {
  const int exponent = (code >> 3) & 0xf, mantissa = code & 0x7;
  const float sign = (code & 0x80) ? -1.0f : 1.0f;
  if (exponent == 0xf && mantissa == 0x7) return std::nanf("");
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -9);  // subnormal
  return sign * std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
}

// Works on the float's bits: round-to-nearest-even keeps 3 of the 23 mantissa bits (carries
// into the exponent as they should); below 2^-6 the value is a multiple of 2^-9, rounded with
// the float unit's default (nearest-even) mode.
inline std::uint8_t float_to_fp8_e4m3(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  const std::uint8_t sign = static_cast<std::uint8_t>((bits >> 24) & 0x80);
  const std::uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return 0x7f;         // NaN
  if (magnitude >= 0x43e00000u) return sign | 0x7e;  // >= 448 (and infinities): saturate
  if (magnitude < 0x3c800000u) {                     // below 2^-6: subnormal multiples of 2^-9
    const float steps = std::fabs(x) * 512.0f;       // < 8, exact
    const float rounded = (steps + 8388608.0f) - 8388608.0f;  // nearest integer, ties to even
    return sign | static_cast<std::uint8_t>(rounded);          // 8 is the smallest normal's code
  }
  const std::uint32_t kept = magnitude + 0x7ffffu + ((magnitude >> 20) & 1u);  // round off 20 bits
  const std::uint32_t exponent = (kept >> 23) - 127 + 7, mantissa = (kept >> 20) & 7u;
  if (exponent > 15 || (exponent == 15 && mantissa == 7)) return sign | 0x7e;  // rounded past 448
  return sign | static_cast<std::uint8_t>((exponent << 3) | mantissa);
}

}  // namespace moerun
