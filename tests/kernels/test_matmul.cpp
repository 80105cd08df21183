// matmul, grouped_matmul, the blockwise matmuls and linear_backward against the Eigen reference
// and finite differences.
#include "kernels/matmul.h"

#include "runtime/error.h"
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

// Blocks of 4 rows with device-side labels: each used block against its own reference
// product in the three roles, the unused places (-1) zero (or untouched when accumulating) and
// adding nothing to any gradient; a label past the FFNs is refused.
TEST(BlockMatmul, EachBlockUsesItsLabelledWeightAndUnusedPlacesAreSkipped) {
  const std::int64_t d = 8, f = 12, block = 4, experts = 3;
  const std::vector<std::int32_t> labels = {2, 0, -1, 2, 1, -1, 0};
  const std::int64_t blocks = static_cast<std::int64_t>(labels.size()), rows = blocks * block;
  const Matrix x = random_matrix(rows, d, 401), dy = random_matrix(rows, f, 402);
  std::vector<Matrix> ws;
  std::vector<Tensor> wt, gt;
  for (std::int64_t e = 0; e < experts; ++e) {
    ws.push_back(random_matrix(d, f, 410 + std::uint64_t(e)));
    wt.push_back(to_tensor(device(), ws.back()));
    gt.push_back(Tensor::zeros(device(), {d, f}));
  }
  Tensor xt = to_tensor(device(), x), dyt = to_tensor(device(), dy), lt = Tensor::from_host(device(), {blocks, 1}, labels);
  const Matrix sevens_y = Matrix::Constant(rows, f, 7.0), sevens_dx = Matrix::Constant(block, d, 7.0);
  Tensor yt = to_tensor(device(), sevens_y), dxt = to_tensor(device(), Matrix(Matrix::Constant(rows, d, 7.0)));
  BlockMatmulArgs fwd{.labels = &lt, .block = block, .x = &xt, .out = &yt};
  BlockMatmulArgs data{.labels = &lt, .block = block, .x = &dyt, .transpose_weights = true, .out = &dxt, .accumulate = true};
  BlockMatmulArgs grad{.labels = &lt, .block = block, .x = &xt, .dy = &dyt};
  for (const Tensor& w : wt) {
    fwd.weights.push_back(&w);
    data.weights.push_back(&w);
  }
  for (Tensor& g : gt) grad.grads.push_back(&g);
  kernels::block_matmul(fwd);
  kernels::block_matmul(data);
  kernels::block_weight_grad(grad);
  const Matrix y = to_matrix(yt, rows, f), dx = to_matrix(dxt, rows, d);
  std::vector<Matrix> expected_grad(static_cast<std::size_t>(experts), Matrix::Zero(d, f));
  for (std::int64_t i = 0; i < blocks; ++i) {
    SCOPED_TRACE(::testing::Message() << "block " << i << " label " << labels[std::size_t(i)]);
    const Matrix xi = x.middleRows(i * block, block), dyi = dy.middleRows(i * block, block);
    if (labels[std::size_t(i)] < 0) {
      EXPECT_TRUE(all_close(Matrix(y.middleRows(i * block, block)), Matrix(Matrix::Zero(block, f)), 0.0, 0.0));
      EXPECT_TRUE(all_close(Matrix(dx.middleRows(i * block, block)), sevens_dx, 0.0, 0.0));
      continue;
    }
    const Matrix& w = ws[std::size_t(labels[std::size_t(i)])];
    EXPECT_TRUE(all_close(Matrix(y.middleRows(i * block, block)), reference::matmul(xi, w, false, false), kRtol, 1e-4));
    const Matrix dxi = sevens_dx + reference::matmul(dyi, w, false, true);
    EXPECT_TRUE(all_close(Matrix(dx.middleRows(i * block, block)), dxi, kRtol, 1e-4));
    expected_grad[std::size_t(labels[std::size_t(i)])] += reference::matmul(xi, dyi, true, false);
  }
  for (std::int64_t e = 0; e < experts; ++e)
    EXPECT_TRUE(all_close(to_matrix(gt[std::size_t(e)], d, f), expected_grad[std::size_t(e)], kRtol, 1e-4)) << "expert " << e;
  const Tensor bad = Tensor::from_host(device(), {blocks, 1}, std::vector<std::int32_t>{0, 0, 0, 3, 0, 0, 0});
  fwd.labels = &bad;
  EXPECT_THROW(kernels::block_matmul(fwd), KernelError);
  const Tensor flat = Tensor::from_host(device(), {blocks}, labels);  // not a column
  fwd.labels = &flat;
  EXPECT_THROW(kernels::block_matmul(fwd), KernelError);
}

}  // namespace moerun::test
