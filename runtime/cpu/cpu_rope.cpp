// Rotary position embedding: a [seq, hd/2] table of cosines and sines per call (one per
// position and frequency, computed in double), then every head's pairs rotated in place.
#include <cmath>
#include <vector>

#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/cpu_precision.h"

namespace moerun::cpu {

void rope(const RopeArgs& p) {
  const std::int64_t rows = p.qkv->dim(0), d = p.qkv->dim(1) / 3, hd = d / p.heads, half = hd / 2;
  std::vector<float> cosines(static_cast<std::size_t>(p.seq * half)), sines(cosines.size());
  for (std::int64_t pos = 0; pos < p.seq; ++pos) {
    for (std::int64_t i = 0; i < half; ++i) {
      const double angle = double(p.first_position + pos) * std::pow(double(p.theta), -2.0 * double(i) / double(hd));
      cosines[static_cast<std::size_t>(pos * half + i)] = static_cast<float>(std::cos(angle));
      sines[static_cast<std::size_t>(pos * half + i)] = static_cast<float>((p.inverse ? -1.0 : 1.0) * std::sin(angle));
    }
  }
  with_typed(*p.qkv, [&](auto* qkv) {
#pragma omp parallel for if (rows * d > (1 << 15))
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* c = cosines.data() + (r % p.seq) * half;
      const float* s = sines.data() + (r % p.seq) * half;
      for (std::int64_t part = 0; part < 2; ++part) {  // q, then k
        for (std::int64_t h = 0; h < p.heads; ++h) {
          const std::int64_t base = r * 3 * d + part * d + h * hd;
          for (std::int64_t i = 0; i < half; ++i) {
            const float a = load(qkv, base + i), b = load(qkv, base + i + half);
            store(qkv, base + i, a * c[i] - b * s[i]);
            store(qkv, base + i + half, a * s[i] + b * c[i]);
          }
        }
      }
    }
  });
}

}  // namespace moerun::cpu
