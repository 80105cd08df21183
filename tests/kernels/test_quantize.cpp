// fp8 (e4m3) packed rows against the reference, which finds each value's nearest e4m3 value by
// search (the kernel encodes arithmetically): the same values and scales, per block of 128 and
// per row, from f32 and bf16 rows into f32 and bf16; a bad block size names both numbers.
#include "kernels/quantize.h"

#include <random>

#include "runtime/error.h"
#include "runtime/fp8.h"
#include "expect_error.h"
#include "test_util.h"

namespace moerun::test {

TEST(Fp8, EveryFiniteCodeRoundTripsOnTheHost) {
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7f) == 0x7f) continue;  // NaN
    const float value = fp8_e4m3_to_float(static_cast<std::uint8_t>(code));
    const int back = float_to_fp8_e4m3(value);
    EXPECT_TRUE(back == code || (value == 0.0f && (back & 0x7f) == 0)) << code << " -> " << value << " -> " << back;
  }
  EXPECT_EQ(fp8_e4m3_to_float(float_to_fp8_e4m3(1.0625f)), 1.0f) << "a tie goes to the even mantissa";
  EXPECT_EQ(fp8_e4m3_to_float(float_to_fp8_e4m3(1000.0f)), 448.0f) << "saturates";
}

// The host encoder works on the float's bits; the reference searches the e4m3 values. With a
// 448 in the row the reference's scale is 1, so both see the same numbers: random magnitudes
// over e4m3's whole range (subnormals included) and every midpoint between neighbours.
TEST(Fp8, BitEncoderAgreesWithTheSearchEverywhere) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> exponent(-12.0, 8.8);
  std::vector<double> values = {448.0};
  for (int i = 0; i < 20000; ++i) values.push_back((rng() % 2 ? -1.0 : 1.0) * std::exp2(exponent(rng)));
  for (int code = 0; code < 0x7e; ++code)
    values.push_back(0.5 * (double(fp8_e4m3_to_float(std::uint8_t(code))) + fp8_e4m3_to_float(std::uint8_t(code + 1))));
  Matrix x(1, static_cast<Eigen::Index>(values.size()));
  for (std::size_t i = 0; i < values.size(); ++i) x(0, static_cast<Eigen::Index>(i)) = static_cast<float>(values[i]);
  const auto ref = reference::fp8_round_trip(x, static_cast<int>(x.cols()));
  ASSERT_EQ(ref.scales(0, 0), 1.0);
  for (Eigen::Index i = 0; i < x.cols(); ++i)
    ASSERT_EQ(fp8_e4m3_to_float(float_to_fp8_e4m3(static_cast<float>(x(0, i)))), ref.values(0, i)) << "value " << x(0, i);
}

TEST(Fp8, PackedRowsMatchTheReferenceForEveryBlockAndDtype) {
  const std::int64_t n = 9, d = 256;
  Matrix x = random_matrix(n, d, 91, 3.0);
  x.row(2).setZero();                            // an all-zero row: scale 1
  x.row(3).segment(128, 128) *= 1e-4;            // one block far smaller than the other
  x(4, 7) = 5000.0;                              // an outlier sets its block's scale
  for (std::int64_t block : {std::int64_t{128}, d}) {
    const auto ref = reference::fp8_round_trip(x, static_cast<int>(block));
    for (DType in : {DType::F32, DType::BF16})
      for (DType out : {DType::F32, DType::BF16}) {
        SCOPED_TRACE(::testing::Message() << "block " << block << ", " << dtype_name(in) << " -> " << dtype_name(out));
        std::vector<float> v(static_cast<std::size_t>(n * d));
        for (std::int64_t i = 0; i < n * d; ++i) v[static_cast<std::size_t>(i)] = static_cast<float>(x.data()[i]);
        Tensor xt = Tensor::from_host(device(), {n, d}, v, in);
        Tensor packed(device(), {n, kernels::fp8_row_bytes(d, block)}, DType::U8), y(device(), {n, d}, out);
        kernels::quantize_fp8({.x = &xt, .packed = &packed, .block = block});
        kernels::dequantize_fp8({.packed = &packed, .block = block, .y = &y});
        const auto expected = in == DType::F32 ? ref : reference::fp8_round_trip(to_matrix(xt), static_cast<int>(block));
        // Same e4m3 value and scale; only the product's rounding (and bf16 output) differs.
        EXPECT_TRUE(all_close(to_matrix(y), expected.values, out == DType::BF16 ? 1.0 / 256 : 1e-6, 0.0));
        // e4m3 keeps 3 mantissa bits: within 1/16 of each value, or of the block's smallest
        // normal step, of the input; outliers cost their block's small values precision.
        const Matrix err = (to_matrix(y) - x).cwiseAbs();
        for (std::int64_t i = 0; i < n; ++i)
          for (std::int64_t j = 0; j < d; ++j)
            EXPECT_LE(err(i, j), std::abs(x(i, j)) / 16 * 1.02 + expected.scales(i, j / block) * std::ldexp(1.0, -9) +
                                     (out == DType::BF16 ? std::abs(x(i, j)) / 128 : 0.0))
                << i << ", " << j;
      }
  }
}

TEST(Fp8, BlockMustDivideTheRowWidth) {
  Tensor x(device(), {2, 100}), packed(device(), {2, 100 + 4}, DType::U8);
  expect_error<KernelError>([&] { kernels::quantize_fp8({.x = &x, .packed = &packed, .block = 128}); },
                            {"scale block 128 does not divide the row width 100"});
}

}  // namespace moerun::test
