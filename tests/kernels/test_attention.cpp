// Causal multi-head attention against the reference and finite differences.
#include "kernels/attention.h"
#include "runtime/error.h"
#include "test_util.h"

namespace moerun::test {

struct AttnCase {
  int batch, seq, heads, head_dim;
};

class AttentionTest : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionTest, ForwardBackwardAndFiniteDifferences) {
  const auto [b, t, h, hd] = GetParam();
  const std::int64_t d = h * hd;
  const Matrix qkv = random_matrix(b * t, 3 * d, 151), dout = random_matrix(b * t, d, 152);
  Tensor qt = to_tensor(device(), qkv), dot = to_tensor(device(), dout);
  Tensor probs(device(), {b, h, t, t}), out(device(), {b * t, d}), dqkv(device(), {b * t, 3 * d});
  AttentionArgs args{.batch = b, .seq = t, .heads = h, .qkv = &qt, .probs = &probs, .out = &out, .dout = &dot, .dqkv = &dqkv};
  kernels::attention_forward(args);
  kernels::attention_backward(args);
  const auto ref = reference::attention(qkv, b, t, h);
  EXPECT_TRUE(all_close(to_matrix(out, b * t, d), ref.out, kRtol, 1e-4));
  EXPECT_TRUE(all_close(to_matrix(probs, b * h * t, t), ref.probs, kRtol, kAtol));
  EXPECT_TRUE(all_close(to_matrix(dqkv, b * t, 3 * d), reference::attention_backward(qkv, b, t, h, dout), 1e-3, 1e-4));
  if (b * t * 3 * d <= 600) {
    const Matrix fd = numeric_gradient([&](const Matrix& m) { return reference::attention(m, b, t, h).out.cwiseProduct(dout).sum(); }, qkv);
    EXPECT_TRUE(all_close(to_matrix(dqkv, b * t, 3 * d), fd, kFdRtol, kFdAtol));
  }
}

// RoPE against the reference, for f32 and bf16 qkv; the inverse undoes it; and the inverse is
// the adjoint (the backward): <R x, g> = <x, R^-1 g> for random x and g.
TEST(Rope, MatchesReferenceInvertsAndIsItsOwnAdjointInverse) {
  const int b = 2, t = 7, h = 3, hd = 8;
  const std::int64_t d = h * hd;
  const double theta = 10000.0;
  const Matrix x = random_matrix(b * t, 3 * d, 171), g = random_matrix(b * t, 3 * d, 172);
  Tensor xt = to_tensor(device(), x);
  kernels::rope({.qkv = &xt, .seq = t, .heads = h, .theta = float(theta)});
  const Matrix rotated = reference::rope(x, t, h, theta);
  EXPECT_TRUE(all_close(to_matrix(xt), rotated, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(Matrix(to_matrix(xt).rightCols(d)), Matrix(x.rightCols(d)), 0.0, 1e-7)) << "v is left alone";
  EXPECT_GT((rotated - x).cwiseAbs().maxCoeff(), 0.1) << "positions > 0 rotate";
  kernels::rope({.qkv = &xt, .seq = t, .heads = h, .theta = float(theta), .inverse = true});
  EXPECT_TRUE(all_close(to_matrix(xt), x, 1e-5, 1e-5));
  Tensor gt = to_tensor(device(), g);
  kernels::rope({.qkv = &gt, .seq = t, .heads = h, .theta = float(theta), .inverse = true});
  EXPECT_NEAR(rotated.cwiseProduct(g).sum(), x.cwiseProduct(to_matrix(gt)).sum(), 1e-4);
  // bf16: the reference on the rounded input, within one rounding of each output.
  Tensor xb = Tensor::from_host(device(), {b * t, 3 * d}, xt.to_host(), DType::BF16);
  const Matrix xr = to_matrix(xb);
  kernels::rope({.qkv = &xb, .seq = t, .heads = h, .theta = float(theta)});
  const Matrix want = reference::rope(xr, t, h, theta);
  EXPECT_TRUE(all_close(to_matrix(xb), want, 2.0 / 256, 1e-3));
}

TEST(Rope, RefusesOddHeadWidthsAndPartialSequences) {
  Tensor odd(device(), {4, 9}), partial(device(), {5, 12});
  EXPECT_THROW(kernels::rope({.qkv = &odd, .seq = 4, .heads = 1}), KernelError);
  EXPECT_THROW(kernels::rope({.qkv = &partial, .seq = 4, .heads = 1}), KernelError);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         ::testing::Values(AttnCase{1, 1, 1, 4}, AttnCase{2, 5, 2, 3}, AttnCase{1, 7, 3, 4},
                                           AttnCase{0, 4, 2, 2}, AttnCase{3, 33, 4, 8}));

// Decoding rotates new rows at their positions after the cache: rows [3, 7) of a sequence of 7,
// rotated alone with first_position 3, equal the same rows rotated with the whole sequence.
TEST(Rope, FirstPositionContinuesTheSequence) {
  const int t = 7, h = 2, hd = 6, first = 3;
  const std::int64_t d = h * hd;
  const Matrix x = random_matrix(t, 3 * d, 193);
  Tensor tail = to_tensor(device(), Matrix(x.bottomRows(t - first)));
  kernels::rope({.qkv = &tail, .seq = t - first, .first_position = first, .heads = h, .theta = 100.0f});
  EXPECT_TRUE(all_close(to_matrix(tail), Matrix(reference::rope(x, t, h, 100.0).bottomRows(t - first)), 1e-5, 1e-6));
  EXPECT_TRUE(all_close(to_matrix(tail), reference::rope(Matrix(x.bottomRows(t - first)), t - first, h, 100.0, false, first),
                        1e-5, 1e-6));
}

// Decoding with a KV cache: a prefill of 5 positions, then one position at a time, gives the
// rows of full causal attention over the whole sequence; the cache holds every k and v.
TEST(CachedAttention, PrefillThenOneAtATimeEqualsFullAttention) {
  const int t = 9, h = 3, hd = 4, prefill = 5;
  const std::int64_t d = h * hd;
  const Matrix qkv = random_matrix(t, 3 * d, 191);
  const auto ref = reference::attention(qkv, 1, t, h);
  for (const DType type : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(type));
    // bf16: the reference sees the same rounded inputs.
    const Matrix input = type == DType::F32 ? qkv : rounded(qkv);
    const auto want = type == DType::F32 ? ref : reference::attention(input, 1, t, h);
    Tensor keys = Tensor::zeros(device(), {t + 2, d}), values = Tensor::zeros(device(), {t + 2, d});
    Matrix got(t, d);
    for (std::int64_t past = 0; past < t;) {
      const std::int64_t n = past == 0 ? prefill : 1;
      const Tensor chunk = to_tensor_as(device(), Matrix(input.middleRows(past, n)), type);
      Tensor out(device(), {n, d}, type);
      kernels::attention_cached({.qkv = &chunk, .keys = &keys, .values = &values, .past = past, .heads = h, .out = &out});
      got.middleRows(past, n) = to_matrix(out, n, d);
      past += n;
    }
    EXPECT_TRUE(all_close(got, want.out, type == DType::F32 ? 1e-5 : 1e-2, type == DType::F32 ? 1e-5 : 1e-2));
    EXPECT_TRUE(all_close(Matrix(to_matrix(keys, t + 2, d).topRows(t)), Matrix(input.middleCols(d, d)), 0.0, 0.0));
  }
  Tensor keys(device(), {4, d}), values(device(), {4, d}), out(device(), {2, d});
  const Tensor two = to_tensor(device(), random_matrix(2, 3 * d, 192));
  EXPECT_THROW(kernels::attention_cached({.qkv = &two, .keys = &keys, .values = &values, .past = 3, .heads = h, .out = &out}),
               KernelError);  // 3 + 2 positions in a cache of 4
}

}  // namespace moerun::test
