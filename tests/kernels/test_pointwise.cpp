// Activations, SwiGLU, element-wise arithmetic, reductions and AdamW against the reference.
#include "kernels/activation.h"
#include "kernels/elementwise.h"
#include "kernels/optimizer.h"
#include "test_util.h"

namespace moerun::test {

class ActivationTest : public ::testing::TestWithParam<std::tuple<Activation, std::int64_t>> {};

TEST_P(ActivationTest, ForwardBackwardAndFiniteDifferences) {
  const auto [act, rows] = GetParam();
  const std::int64_t cols = 9;
  const Matrix x = random_matrix(rows, cols, 21, 2.0), dy = random_matrix(rows, cols, 22);
  auto fwd = [act](const Matrix& m) { return act == Activation::Gelu ? reference::gelu(m) : reference::silu(m); };
  Tensor xt = to_tensor(device(), x), dyt = to_tensor(device(), dy), y(device(), {rows, cols}), dx(device(), {rows, cols});
  kernels::activation_forward({.activation = act, .x = &xt, .out = &y});
  kernels::activation_backward({.activation = act, .x = &xt, .dy = &dyt, .out = &dx});
  EXPECT_TRUE(all_close(to_matrix(y, rows, cols), fwd(x), kRtol, kAtol));
  const Matrix ref_dx = act == Activation::Gelu ? reference::gelu_backward(x, dy) : reference::silu_backward(x, dy);
  EXPECT_TRUE(all_close(to_matrix(dx, rows, cols), ref_dx, kRtol, kAtol));
  if (rows > 0) {
    const Matrix fd = numeric_gradient([&](const Matrix& m) { return fwd(m).cwiseProduct(dy).sum(); }, x);
    EXPECT_TRUE(all_close(to_matrix(dx, rows, cols), fd, kFdRtol, kFdAtol));
  }
}

INSTANTIATE_TEST_SUITE_P(All, ActivationTest,
                         ::testing::Combine(::testing::Values(Activation::Gelu, Activation::Silu),
                                            ::testing::Values<std::int64_t>(0, 1, 3, 127)));

TEST(SwiGlu, ForwardBackwardAndFiniteDifferences) {
  for (std::int64_t rows : {0, 1, 3, 127}) {
    SCOPED_TRACE(rows);
    const std::int64_t cols = 6;
    const Matrix g = random_matrix(rows, cols, 31, 2.0), u = random_matrix(rows, cols, 32), dy = random_matrix(rows, cols, 33);
    Tensor gt = to_tensor(device(), g), ut = to_tensor(device(), u), dyt = to_tensor(device(), dy);
    Tensor y(device(), {rows, cols}), dg(device(), {rows, cols}), du(device(), {rows, cols});
    kernels::swiglu_forward({.gate = &gt, .up = &ut, .y = &y});
    kernels::swiglu_backward({.gate = &gt, .up = &ut, .dy = &dyt, .dgate = &dg, .dup = &du});
    EXPECT_TRUE(all_close(to_matrix(y, rows, cols), reference::swiglu(g, u), kRtol, kAtol));
    const auto ref = reference::swiglu_backward(g, u, dy);
    EXPECT_TRUE(all_close(to_matrix(dg, rows, cols), ref.dgate, kRtol, kAtol));
    EXPECT_TRUE(all_close(to_matrix(du, rows, cols), ref.dup, kRtol, kAtol));
    if (rows > 0 && rows < 100) {
      auto loss = [&](const Matrix& gg, const Matrix& uu) { return reference::swiglu(gg, uu).cwiseProduct(dy).sum(); };
      EXPECT_TRUE(all_close(to_matrix(dg, rows, cols), numeric_gradient([&](const Matrix& m) { return loss(m, u); }, g),
                            kFdRtol, kFdAtol));
      EXPECT_TRUE(all_close(to_matrix(du, rows, cols), numeric_gradient([&](const Matrix& m) { return loss(g, m); }, u),
                            kFdRtol, kFdAtol));
    }
  }
}

TEST(Elementwise, AddMulBroadcastAxpyScale) {
  const Matrix a = random_matrix(5, 7, 41), b = random_matrix(5, 7, 42);
  const Vector row = random_vector(7, 43);
  Tensor at = to_tensor(device(), a), bt = to_tensor(device(), b), rt = to_tensor(device(), row), out(device(), {5, 7});
  kernels::binary({.op = BinaryOp::Add, .a = &at, .b = &bt, .out = &out});
  EXPECT_TRUE(all_close(to_matrix(out), a + b, kRtol, kAtol));
  kernels::binary({.op = BinaryOp::Mul, .a = &at, .b = &bt, .out = &out});
  EXPECT_TRUE(all_close(to_matrix(out), a.cwiseProduct(b), kRtol, kAtol));
  kernels::binary({.op = BinaryOp::Add, .a = &at, .b = &rt, .out = &out});
  Matrix expected = a;
  expected.rowwise() += row.transpose();
  EXPECT_TRUE(all_close(to_matrix(out), expected, kRtol, kAtol));
  kernels::axpy({.alpha = -0.5f, .x = &bt, .y = &at});
  EXPECT_TRUE(all_close(to_matrix(at), a - 0.5 * b, kRtol, kAtol));
  kernels::scale(bt, 3.0f);
  EXPECT_TRUE(all_close(to_matrix(bt), 3.0 * b, kRtol, kAtol));
}

TEST(Elementwise, SumRowsSumSquaresAndNonFinite) {
  for (std::int64_t rows : {0, 1, 3, 127}) {
    const Matrix x = random_matrix(rows, 300, 51);
    Tensor xt = to_tensor(device(), x), out = Tensor::zeros(device(), {300});
    kernels::sum_rows({.x = &xt, .out = &out});
    EXPECT_TRUE(all_close(to_vector(out), Vector(x.colwise().sum().transpose()), kRtol, 1e-4));
    kernels::sum_rows({.x = &xt, .out = &out, .accumulate = true});
    EXPECT_TRUE(all_close(to_vector(out), Vector(2.0 * x.colwise().sum().transpose()), kRtol, 1e-4));
    // A device scalar: computed in double, rounded once to fp32.
    EXPECT_NEAR(kernels::read_sum_squares(xt), x.squaredNorm(), 1e-7 * std::max(1.0, x.squaredNorm()));
    EXPECT_EQ(kernels::read_count_nonfinite(xt), 0);
    Tensor acc = Tensor::from_host(device(), {1}, std::vector<float>{2.0f});
    kernels::sum_squares({.x = &xt, .out = &acc, .scale = 0.5f, .accumulate = true});
    EXPECT_NEAR(acc.to_host()[0], 2.0 + 0.5 * x.squaredNorm(), 1e-7 * std::max(2.0, x.squaredNorm()));
  }
  Tensor bad = Tensor::from_host(device(), {4}, std::vector<float>{1.0f, NAN, INFINITY, -INFINITY});
  EXPECT_EQ(kernels::read_count_nonfinite(bad), 3);
  Tensor count = Tensor::from_host(device(), {1}, std::vector<float>{1.0f});
  kernels::count_nonfinite({.x = &bad, .out = &count, .accumulate = true});
  EXPECT_EQ(count.to_host()[0], 4.0f);
}

TEST(AdamW, MatchesReferenceOverSeveralSteps) {
  const std::int64_t n = 1000;
  reference::AdamWState ref{random_vector(n, 61), Vector::Zero(n), Vector::Zero(n)};
  Tensor p = to_tensor(device(), ref.param), m = Tensor::zeros(device(), {n}), v = Tensor::zeros(device(), {n});
  for (std::int64_t step = 1; step <= 5; ++step) {
    const Vector g = random_vector(n, 70 + static_cast<std::uint64_t>(step));
    Tensor gt = to_tensor(device(), g);
    kernels::adamw_update({.param = &p, .grad = &gt, .m = &m, .v = &v, .lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f,
                           .epsilon = 1e-8f, .weight_decay = 0.1f, .step = step});
    ref = reference::adamw(ref, g, 1e-2, 0.9, 0.95, 1e-8, 0.1, step);
  }
  EXPECT_TRUE(all_close(to_vector(p), ref.param, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(to_vector(m), ref.m, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(to_vector(v), ref.v, 1e-5, 1e-7));
}

TEST(GradNorm, GlobalNormAndClipping) {
  const Matrix a = random_matrix(3, 4, 81), b = random_matrix(10, 1, 82);
  Tensor at = to_tensor(device(), a), bt = to_tensor(device(), b);
  const double norm = kernels::global_norm({&at, &bt});
  EXPECT_NEAR(norm, std::sqrt(a.squaredNorm() + b.squaredNorm()), 1e-7 * norm);  // sums rounded to fp32 on the device
  kernels::clip_by_norm({&at, &bt}, norm, 10.0 * norm);  // below the limit: unchanged
  EXPECT_NEAR(kernels::global_norm({&at, &bt}), norm, 1e-6);
  kernels::clip_by_norm({&at, &bt}, norm, 0.5);
  EXPECT_NEAR(kernels::global_norm({&at, &bt}), 0.5, 1e-6);
  EXPECT_TRUE(all_close(to_matrix(at), a * (0.5 / norm), kRtol, kAtol));
}

}  // namespace moerun::test
