// fp8 (e4m3) quantization of rows with per-block fp32 scales, as DeepEP dispatches tokens: the
// packed row format of parallel.dispatch_dtype = fp8 (runtime/kernel_table.h, Fp8RowsArgs).
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

// Bytes of one packed row: d e4m3 values and d / block fp32 scales.
std::int64_t fp8_row_bytes(std::int64_t d, std::int64_t block);
void quantize_fp8(const Fp8RowsArgs& args);    // x -> packed
void dequantize_fp8(const Fp8RowsArgs& args);  // packed -> y

}  // namespace moerun::kernels
