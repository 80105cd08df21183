// fp8 e4m3 ("E4M3FN": 4 exponent bits, bias 7, 3 mantissa bits, no infinities, largest finite
// 448, smallest subnormal 2^-9) on the host: encode with round-to-nearest-even and saturation,
// decode exactly. The packed rows of parallel.dispatch_dtype = fp8 use it (kernels/quantize.h);
// the byte 0x7f / 0xff is NaN.
#pragma once

#include <cmath>
#include <cstdint>

namespace moerun {

inline constexpr float kFp8E4M3Max = 448.0f;

inline float fp8_e4m3_to_float(std::uint8_t code) {
  const int exponent = (code >> 3) & 0xf, mantissa = code & 0x7;
  const float sign = (code & 0x80) ? -1.0f : 1.0f;
  if (exponent == 0xf && mantissa == 0x7) return std::nanf("");
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -9);  // subnormal
  return sign * std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
}

inline std::uint8_t float_to_fp8_e4m3(float x) {
  if (std::isnan(x)) return 0x7f;
  const std::uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const float a = std::fabs(x);
  if (a >= kFp8E4M3Max) return sign | 0x7e;  // saturate to +-448
  int e = 0;
  std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1): the leading bit is 2^(e - 1)
  if (a == 0.0f || e - 1 < -6) {
    // Subnormal range: multiples of 2^-9. 8 * 2^-9 is the smallest normal, whose code is 8 too.
    return sign | static_cast<std::uint8_t>(std::nearbyint(std::ldexp(a, 9)));
  }
  // Normal: 1.mmm x 2^(e - 1); three mantissa bits rounded to nearest even (the default mode).
  int steps = static_cast<int>(std::nearbyint(std::ldexp(a, 3 - (e - 1))));  // in [8, 16]
  int exponent = e - 1 + 7;
  if (steps == 16) {
    steps = 8;
    ++exponent;
  }
  if (exponent > 15 || (exponent == 15 && steps - 8 == 7)) return sign | 0x7e;  // rounded past 448
  return sign | static_cast<std::uint8_t>((exponent << 3) | (steps - 8));
}

}  // namespace moerun
