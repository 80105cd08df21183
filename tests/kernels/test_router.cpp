// The fused MoE router against the reference and finite differences of
// L = <w, gates> + sum_i <aux[group of i], probs[i]> + z_scale / 2 * sum_i lse_i^2 (z: softmax only),
// for softmax and sigmoid scores, with and without a selection-only bias, and balancing
// weights per micro-batch (one group) or per sequence (several).
#include "kernels/router.h"
#include "expect_error.h"
#include "runtime/error.h"
#include "test_util.h"

namespace moerun::test {

// top_k, renormalize, tokens, sigmoid, selection bias
class RouterTest : public ::testing::TestWithParam<std::tuple<int, bool, std::int64_t, bool, bool>> {};

TEST_P(RouterTest, ForwardBackwardAndFiniteDifferences) {
  const auto [k, renormalize, n, sigmoid, with_bias] = GetParam();
  const std::int64_t e = 6, groups = n % 4 == 0 && n > 0 ? 4 : n == 3 ? 3 : 1;
  const double z_scale = sigmoid ? 0.0 : 0.3;
  const Matrix logits = random_matrix(n, e, 161, 2.0), w = random_matrix(n, k, 162);
  const Matrix aux = random_matrix(groups, e, 163, 0.1);
  // A bias as large as the scores' spread, so that it changes some choices.
  const Vector bias = random_vector(e, 164, 0.5);
  const Vector* b = with_bias ? &bias : nullptr;
  Tensor lt = to_tensor(device(), logits), wt = to_tensor(device(), w), at = to_tensor(device(), aux);
  Tensor bt = to_tensor(device(), bias);
  Tensor probs(device(), {n, e}), lse(device(), {n}), index(device(), {n, k}, DType::I32), gates(device(), {n, k});
  Tensor dlogits(device(), {n, e});
  RouterArgs args{.logits = &lt, .probs = &probs, .lse = &lse, .index = &index, .gates = &gates, .renormalize = renormalize,
                  .score = sigmoid ? RouterScore::Sigmoid : RouterScore::Softmax, .select_bias = with_bias ? &bt : nullptr,
                  .dgates = &wt, .aux_weight = &at, .z_scale = static_cast<float>(z_scale), .dlogits = &dlogits};
  kernels::router_forward(args);
  kernels::router_backward(args);
  const auto ref = reference::router(logits, k, renormalize, sigmoid, b);
  EXPECT_TRUE(all_close(to_matrix(probs, n, e), ref.probs, kRtol, kAtol));
  EXPECT_TRUE(all_close(to_vector(lse), ref.lse, kRtol, kAtol));
  EXPECT_EQ(index.to_host_i32(), ref.index);
  EXPECT_TRUE(all_close(to_matrix(gates, n, k), ref.gates, kRtol, kAtol));
  EXPECT_TRUE(all_close(to_matrix(dlogits, n, e),
                        reference::router_backward(logits, k, renormalize, w, aux, z_scale, sigmoid, b), kRtol, kAtol));
  if (n > 0 && n < 100) {
    auto loss = [&](const Matrix& m) {
      const auto r = reference::router(m, k, renormalize, sigmoid, b);
      double balance = 0.0;
      for (Eigen::Index i = 0; i < n; ++i) balance += r.probs.row(i).dot(aux.row(i / (n / groups)));
      return r.gates.cwiseProduct(w).sum() + balance + 0.5 * z_scale * r.lse.squaredNorm();
    };
    EXPECT_TRUE(all_close(to_matrix(dlogits, n, e), numeric_gradient(loss, logits), kFdRtol, kFdAtol));
  }
}

INSTANTIATE_TEST_SUITE_P(All, RouterTest,
                         ::testing::Combine(::testing::Values(1, 2, 6), ::testing::Bool(),
                                            ::testing::Values<std::int64_t>(0, 1, 3, 12, 127), ::testing::Bool(),
                                            ::testing::Bool()));

// The bias changes which experts are chosen, never the gates' values: the gates are the
// chosen experts' own scores.
TEST(RouterBias, ChangesTheChoiceNotTheGates) {
  const std::int64_t n = 64, e = 8, k = 2;
  const Matrix logits = random_matrix(n, e, 171, 1.0);
  Vector bias = Vector::Zero(e);
  bias(e - 1) = 10.0;  // expert e-1 wins every token's first place
  for (const bool sigmoid : {false, true}) {
    Tensor lt = to_tensor(device(), logits), bt = to_tensor(device(), bias);
    Tensor probs(device(), {n, e}), lse(device(), {n}), index(device(), {n, k}, DType::I32), gates(device(), {n, k});
    kernels::router_forward({.logits = &lt, .probs = &probs, .lse = &lse, .index = &index, .gates = &gates,
                             .renormalize = false, .score = sigmoid ? RouterScore::Sigmoid : RouterScore::Softmax,
                             .select_bias = &bt});
    const auto chosen = index.to_host_i32();
    const Matrix g = to_matrix(gates, n, k);
    const auto plain = reference::router(logits, 1, false, sigmoid);
    for (std::int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(chosen[static_cast<std::size_t>(i * k)], e - 1);
      const double s = sigmoid ? 1.0 / (1.0 + std::exp(-logits(i, e - 1))) : reference::softmax_rows(logits)(i, e - 1);
      EXPECT_NEAR(g(i, 0), s, 1e-6) << "the gate must be the score without the bias";
      // The second choice is the unbiased best, unless that was e - 1 itself.
      if (plain.index[static_cast<std::size_t>(i)] != e - 1) {
        EXPECT_EQ(chosen[static_cast<std::size_t>(i * k + 1)], plain.index[static_cast<std::size_t>(i)]);
      }
    }
  }
}

// Forced-balanced routing (bench.router_balanced): the given experts are chosen whatever the
// scores, their scores are the gates, and the gradient through those gates matches finite
// differences with the choice held fixed.
TEST(RouterForced, TakesTheGivenExpertsWithTheirScoresAsGates) {
  const std::int64_t n = 10, e = 5, k = 2;
  const Matrix logits = random_matrix(n, e, 191, 2.0), w = random_matrix(n, k, 192);
  std::vector<std::int32_t> forced(static_cast<std::size_t>(n * k));
  for (std::int64_t i = 0; i < n * k; ++i) forced[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % e);
  for (const bool sigmoid : {false, true}) {
    Tensor lt = to_tensor(device(), logits), wt = to_tensor(device(), w), at = Tensor::zeros(device(), {1, e});
    Tensor ft = Tensor::from_host(device(), {n, k}, forced);
    Tensor probs(device(), {n, e}), lse(device(), {n}), index(device(), {n, k}, DType::I32), gates(device(), {n, k});
    Tensor dlogits(device(), {n, e});
    RouterArgs args{.logits = &lt, .probs = &probs, .lse = &lse, .index = &index, .gates = &gates,
                    .score = sigmoid ? RouterScore::Sigmoid : RouterScore::Softmax, .forced_index = &ft,
                    .dgates = &wt, .aux_weight = &at, .dlogits = &dlogits};
    kernels::router_forward(args);
    kernels::router_backward(args);
    EXPECT_EQ(index.to_host_i32(), forced);
    // The gates as a function of the logits with the choice fixed: scores at the forced experts,
    // over their sum (renormalize).
    auto forced_gates = [&](const Matrix& m) {
      Matrix scores = sigmoid ? Matrix((1.0 + (-m.array()).exp()).inverse()) : reference::softmax_rows(m);
      Matrix g(n, k);
      for (std::int64_t i = 0; i < n; ++i) {
        for (std::int64_t j = 0; j < k; ++j) g(i, j) = scores(i, forced[static_cast<std::size_t>(i * k + j)]);
        g.row(i) /= g.row(i).sum();
      }
      return g;
    };
    EXPECT_TRUE(all_close(to_matrix(gates, n, k), forced_gates(logits), kRtol, kAtol));
    auto loss = [&](const Matrix& m) { return forced_gates(m).cwiseProduct(w).sum(); };
    EXPECT_TRUE(all_close(to_matrix(dlogits, n, e), numeric_gradient(loss, logits), kFdRtol, kFdAtol));
  }
}

// Bad arguments name the problem.
TEST(RouterErrors, SigmoidRefusesTheZLossAndAuxRowsMustDivideTheTokens) {
  const std::int64_t n = 6, e = 4, k = 2;
  Tensor lt = to_tensor(device(), random_matrix(n, e, 181)), wt = to_tensor(device(), random_matrix(n, k, 182));
  Tensor probs(device(), {n, e}), lse(device(), {n}), index(device(), {n, k}, DType::I32), gates(device(), {n, k});
  Tensor dlogits(device(), {n, e}), aux1 = to_tensor(device(), random_matrix(1, e, 183)),
                                    aux4 = to_tensor(device(), random_matrix(4, e, 184));
  RouterArgs args{.logits = &lt, .probs = &probs, .lse = &lse, .index = &index, .gates = &gates,
                  .score = RouterScore::Sigmoid, .dgates = &wt, .aux_weight = &aux1, .z_scale = 0.5f, .dlogits = &dlogits};
  kernels::router_forward(args);
  expect_error<KernelError>([&] { kernels::router_backward(args); }, "z-loss is defined on softmax");
  args.z_scale = 0.0f;
  args.aux_weight = &aux4;
  expect_error<KernelError>([&] { kernels::router_backward(args); }, "must be >= 1 and divide the 6 tokens");
}

}  // namespace moerun::test
