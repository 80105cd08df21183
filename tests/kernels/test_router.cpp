// The fused MoE router against the reference and finite differences of
// L = <w, gates> + sum_e aux[e] * sum_i probs[i, e] + z_scale / 2 * sum_i lse_i^2.
#include "kernels/router.h"
#include "test_util.h"

namespace moerun::test {

class RouterTest : public ::testing::TestWithParam<std::tuple<int, bool, std::int64_t>> {};

TEST_P(RouterTest, ForwardBackwardAndFiniteDifferences) {
  const auto [k, renormalize, n] = GetParam();
  const std::int64_t e = 6;
  const double z_scale = 0.3;
  const Matrix logits = random_matrix(n, e, 161, 2.0), w = random_matrix(n, k, 162);
  const Vector aux = random_vector(e, 163, 0.1);
  Tensor lt = to_tensor(device(), logits), wt = to_tensor(device(), w), at = to_tensor(device(), aux);
  Tensor probs(device(), {n, e}), lse(device(), {n}), index(device(), {n, k}, DType::I32), gates(device(), {n, k});
  Tensor dlogits(device(), {n, e});
  RouterArgs args{.logits = &lt, .probs = &probs, .lse = &lse, .index = &index, .gates = &gates, .renormalize = renormalize,
                  .dgates = &wt, .aux_weight = &at, .z_scale = static_cast<float>(z_scale), .dlogits = &dlogits};
  kernels::router_forward(args);
  kernels::router_backward(args);
  const auto ref = reference::router(logits, k, renormalize);
  EXPECT_TRUE(all_close(to_matrix(probs, n, e), ref.probs, kRtol, kAtol));
  EXPECT_TRUE(all_close(to_vector(lse), ref.lse, kRtol, kAtol));
  EXPECT_EQ(index.to_host_i32(), ref.index);
  EXPECT_TRUE(all_close(to_matrix(gates, n, k), ref.gates, kRtol, kAtol));
  EXPECT_TRUE(all_close(to_matrix(dlogits, n, e), reference::router_backward(logits, k, renormalize, w, aux, z_scale), kRtol,
                        kAtol));
  if (n > 0 && n < 100) {
    auto loss = [&](const Matrix& m) {
      const auto r = reference::router(m, k, renormalize);
      return r.gates.cwiseProduct(w).sum() + (r.probs * aux).sum() + 0.5 * z_scale * r.lse.squaredNorm();
    };
    EXPECT_TRUE(all_close(to_matrix(dlogits, n, e), numeric_gradient(loss, logits), kFdRtol, kFdAtol));
  }
}

INSTANTIATE_TEST_SUITE_P(All, RouterTest,
                         ::testing::Combine(::testing::Values(1, 2, 6), ::testing::Bool(),
                                            ::testing::Values<std::int64_t>(0, 1, 3, 127)));

}  // namespace moerun::test
