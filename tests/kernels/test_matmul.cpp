// matmul, grouped_matmul and linear_backward against the Eigen reference and finite differences.
#include "kernels/matmul.h"

#include "test_util.h"

namespace moerun::test {

struct MatmulCase {
  std::int64_t m, k, n;
};

class MatmulTest : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(MatmulTest, MatchesReferenceForEveryTransposeBiasAndAccumulate) {
  const auto [m, k, n] = GetParam();
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (int with_bias = 0; with_bias < 2; ++with_bias)
        for (int acc = 0; acc < 2; ++acc) {
          SCOPED_TRACE(::testing::Message() << "ta " << ta << " tb " << tb << " bias " << with_bias << " acc " << acc);
          const Matrix a = ta ? random_matrix(k, m, 1) : random_matrix(m, k, 1);
          const Matrix b = tb ? random_matrix(n, k, 2) : random_matrix(k, n, 2);
          const Vector bias = random_vector(n, 3);
          const Matrix c0 = random_matrix(m, n, 4);
          Tensor ta_t = to_tensor(device(), a), tb_t = to_tensor(device(), b), bias_t = to_tensor(device(), bias);
          Tensor c = to_tensor(device(), c0);
          kernels::matmul({.a = &ta_t, .b = &tb_t, .bias = with_bias ? &bias_t : nullptr, .c = &c, .transpose_a = ta == 1,
                           .transpose_b = tb == 1, .accumulate = acc == 1});
          Matrix expected = reference::matmul(a, b, ta == 1, tb == 1, with_bias ? &bias : nullptr);
          if (acc) expected += c0;
          EXPECT_TRUE(all_close(to_matrix(c, m, n), expected, kRtol, kAtol * std::max<double>(1.0, std::sqrt(double(k)))));
        }
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulTest,
                         ::testing::Values(MatmulCase{1, 1, 1}, MatmulCase{3, 5, 7}, MatmulCase{127, 33, 65},
                                           MatmulCase{0, 4, 5}, MatmulCase{4, 0, 5}, MatmulCase{64, 128, 3}));

TEST(LinearBackward, MatchesReferenceAndFiniteDifferences) {
  const std::int64_t m = 7, k = 5, n = 3;
  const Matrix a = random_matrix(m, k, 11), w = random_matrix(k, n, 12), dc = random_matrix(m, n, 13);
  const Vector bias = random_vector(n, 14);
  Tensor at = to_tensor(device(), a), wt = to_tensor(device(), w), dct = to_tensor(device(), dc);
  Tensor da(device(), {m, k}), dw(device(), {k, n}), db(device(), {n});
  kernels::linear_backward(at, wt, dct, {.da = &da, .dw = &dw, .dbias = &db});
  // Analytic reference.
  EXPECT_TRUE(all_close(to_matrix(da), reference::matmul(dc, w, false, true), kRtol, kAtol));
  EXPECT_TRUE(all_close(to_matrix(dw), reference::matmul(a, dc, true, false), kRtol, kAtol));
  EXPECT_TRUE(all_close(to_vector(db), Vector(dc.colwise().sum().transpose()), kRtol, kAtol));
  // Finite differences of L = <dc, a w + bias> through the reference forward.
  auto loss = [&](const Matrix& aa, const Matrix& ww, const Vector& bb) {
    return reference::matmul(aa, ww, false, false, &bb).cwiseProduct(dc).sum();
  };
  EXPECT_TRUE(all_close(to_matrix(da), numeric_gradient([&](const Matrix& x) { return loss(x, w, bias); }, a), kFdRtol, kFdAtol));
  EXPECT_TRUE(all_close(to_matrix(dw), numeric_gradient([&](const Matrix& x) { return loss(a, x, bias); }, w), kFdRtol, kFdAtol));
  EXPECT_TRUE(all_close(to_vector(db), numeric_gradient([&](const Vector& x) { return loss(a, w, x); }, bias), kFdRtol, kFdAtol));
  // Accumulation adds to the weight and bias gradients.
  kernels::linear_backward(at, wt, dct, {.dw = &dw, .dbias = &db, .accumulate = true});
  EXPECT_TRUE(all_close(to_matrix(dw), 2.0 * reference::matmul(a, dc, true, false), kRtol, kAtol));
  EXPECT_TRUE(all_close(to_vector(db), Vector(2.0 * dc.colwise().sum().transpose()), kRtol, kAtol));
}

TEST(GroupedMatmul, UnevenGroupsMatchReferenceInAllThreeRoles) {
  const std::int64_t d = 16, f = 24;
  const std::vector<std::int64_t> tokens = {0, 1, 3, 127, 64, 5};
  std::vector<Matrix> xs, ws, dys;
  std::vector<Tensor> xt, wt, yt, dyt, dxt, dwt;
  for (std::size_t e = 0; e < tokens.size(); ++e) {
    xs.push_back(random_matrix(tokens[e], d, 100 + e));
    ws.push_back(random_matrix(d, f, 200 + e));
    dys.push_back(random_matrix(tokens[e], f, 300 + e));
    xt.push_back(to_tensor(device(), xs.back()));
    wt.push_back(to_tensor(device(), ws.back()));
    dyt.push_back(to_tensor(device(), dys.back()));
    yt.emplace_back(device(), Shape{tokens[e], f});
    dxt.emplace_back(device(), Shape{tokens[e], d});
    dwt.push_back(Tensor::zeros(device(), {d, f}));
  }
  GroupedMatmulArgs fwd, bwd_data, bwd_weight;
  for (std::size_t e = 0; e < tokens.size(); ++e) {
    fwd.groups.push_back({.a = &xt[e], .b = &wt[e], .c = &yt[e]});
    bwd_data.groups.push_back({.a = &dyt[e], .b = &wt[e], .c = &dxt[e], .transpose_b = true});
    bwd_weight.groups.push_back({.a = &xt[e], .b = &dyt[e], .c = &dwt[e], .transpose_a = true, .accumulate = true});
  }
  for (int repeat = 0; repeat < 2; ++repeat) kernels::grouped_matmul(fwd);
  kernels::grouped_matmul(bwd_data);
  kernels::grouped_matmul(bwd_weight);
  for (std::size_t e = 0; e < tokens.size(); ++e) {
    SCOPED_TRACE(::testing::Message() << "group " << e << " with " << tokens[e] << " rows");
    EXPECT_TRUE(all_close(to_matrix(yt[e], tokens[e], f), reference::matmul(xs[e], ws[e], false, false), kRtol, 1e-4));
    EXPECT_TRUE(all_close(to_matrix(dxt[e], tokens[e], d), reference::matmul(dys[e], ws[e], false, true), kRtol, 1e-4));
    EXPECT_TRUE(all_close(to_matrix(dwt[e], d, f), reference::matmul(xs[e], dys[e], true, false), kRtol, 1e-4));
  }
}

}  // namespace moerun::test
