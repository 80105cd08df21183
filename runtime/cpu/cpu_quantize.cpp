// fp8 (e4m3) packed rows: per block, the largest magnitude sets the fp32 scale, each value is
// encoded with round-to-nearest-even (runtime/fp8.h). Rows in parallel; plain loops.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/cpu_precision.h"
#include "runtime/fp8.h"

namespace moerun::cpu {

void quantize_fp8(const Fp8RowsArgs& p) {
  const std::int64_t n = p.x->dim(0), d = p.x->dim(1), block = p.block, row_bytes = p.packed->dim(1);
  auto* packed = static_cast<std::uint8_t*>(p.packed->data());
  with_typed(*p.x, [&](const auto* x) {
#pragma omp parallel for if (n * d > (1 << 15))
    for (std::int64_t i = 0; i < n; ++i) {
      std::uint8_t* codes = packed + i * row_bytes;
      std::uint8_t* scales = codes + d;
      for (std::int64_t b0 = 0; b0 < d; b0 += block) {
        float amax = 0.0f;
        for (std::int64_t j = b0; j < b0 + block; ++j) amax = std::max(amax, std::fabs(load(x, i * d + j)));
        const float scale = amax > 0.0f ? amax / kFp8E4M3Max : 1.0f;
        for (std::int64_t j = b0; j < b0 + block; ++j) codes[j] = float_to_fp8_e4m3(load(x, i * d + j) / scale);
        std::memcpy(scales + 4 * (b0 / block), &scale, sizeof(float));
      }
    }
  });
}

void dequantize_fp8(const Fp8RowsArgs& p) {
  const std::int64_t n = p.y->dim(0), d = p.y->dim(1), block = p.block, row_bytes = p.packed->dim(1);
  const auto* packed = static_cast<const std::uint8_t*>(p.packed->data());
  float decode[256];
  for (int c = 0; c < 256; ++c) decode[c] = fp8_e4m3_to_float(static_cast<std::uint8_t>(c));
  with_typed(*p.y, [&](auto* y) {
#pragma omp parallel for if (n * d > (1 << 15))
    for (std::int64_t i = 0; i < n; ++i) {
      const std::uint8_t* codes = packed + i * row_bytes;
      for (std::int64_t b0 = 0; b0 < d; b0 += block) {
        float scale;
        std::memcpy(&scale, codes + d + 4 * (b0 / block), sizeof(float));
        for (std::int64_t j = b0; j < b0 + block; ++j) store(y, i * d + j, decode[codes[j]] * scale);
      }
    }
  });
}

}  // namespace moerun::cpu
