// Causal multi-head attention against the reference and finite differences.
#include "kernels/attention.h"
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

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         ::testing::Values(AttnCase{1, 1, 1, 4}, AttnCase{2, 5, 2, 3}, AttnCase{1, 7, 3, 4},
                                           AttnCase{0, 4, 2, 2}, AttnCase{3, 33, 4, 8}));

}  // namespace moerun::test
