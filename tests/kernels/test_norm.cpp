// Softmax, layer norm and RMS norm against the reference and finite differences.
#include "kernels/norm.h"
#include "kernels/softmax.h"
#include "test_util.h"

namespace moerun::test {

TEST(Softmax, ForwardBackwardAndFiniteDifferences) {
  for (std::int64_t rows : {0, 1, 3, 127}) {
    SCOPED_TRACE(rows);
    const std::int64_t cols = 11;
    const Matrix x = random_matrix(rows, cols, 91, 3.0), dy = random_matrix(rows, cols, 92);
    Tensor xt = to_tensor(device(), x), dyt = to_tensor(device(), dy), y(device(), {rows, cols}), dx(device(), {rows, cols});
    kernels::softmax_forward({.x = &xt, .out = &y});
    kernels::softmax_backward({.y = &y, .dy = &dyt, .out = &dx});
    const Matrix ref_y = reference::softmax_rows(x);
    EXPECT_TRUE(all_close(to_matrix(y, rows, cols), ref_y, kRtol, kAtol));
    EXPECT_TRUE(all_close(to_matrix(dx, rows, cols), reference::softmax_rows_backward(ref_y, dy), kRtol, kAtol));
    if (rows > 0 && rows < 100) {
      const Matrix fd = numeric_gradient([&](const Matrix& m) { return reference::softmax_rows(m).cwiseProduct(dy).sum(); }, x);
      EXPECT_TRUE(all_close(to_matrix(dx, rows, cols), fd, kFdRtol, kFdAtol));
    }
  }
}

TEST(LayerNorm, ForwardBackwardAccumulateAndFiniteDifferences) {
  for (std::int64_t rows : {0, 1, 3, 127}) {
    SCOPED_TRACE(rows);
    const std::int64_t d = 10;
    const double eps = 1e-5;
    const Matrix x = random_matrix(rows, d, 101, 2.0), dy = random_matrix(rows, d, 102);
    const Vector gamma = random_vector(d, 103), beta = random_vector(d, 104);
    Tensor xt = to_tensor(device(), x), gt = to_tensor(device(), gamma), bt = to_tensor(device(), beta);
    Tensor dyt = to_tensor(device(), dy), y(device(), {rows, d}), mean(device(), {rows}), var(device(), {rows});
    Tensor dx(device(), {rows, d}), dgamma = Tensor::zeros(device(), {d}), dbeta = Tensor::zeros(device(), {d});
    LayerNormArgs args{.x = &xt, .gamma = &gt, .beta = &bt, .mean = &mean, .variance = &var, .epsilon = float(eps), .y = &y,
                       .dy = &dyt, .dx = &dx, .dgamma = &dgamma, .dbeta = &dbeta};
    kernels::layer_norm_forward(args);
    kernels::layer_norm_backward(args);
    const auto ref = reference::layer_norm(x, gamma, beta, eps);
    EXPECT_TRUE(all_close(to_matrix(y, rows, d), ref.y, kRtol, 1e-4));
    EXPECT_TRUE(all_close(to_vector(mean), ref.mean, kRtol, kAtol));
    EXPECT_TRUE(all_close(to_vector(var), ref.variance, kRtol, kAtol));
    const auto grads = reference::layer_norm_backward(x, gamma, dy, eps);
    EXPECT_TRUE(all_close(to_matrix(dx, rows, d), grads.dx, 1e-3, 1e-4));
    EXPECT_TRUE(all_close(to_vector(dgamma), grads.dgamma, 1e-3, 1e-4));
    EXPECT_TRUE(all_close(to_vector(dbeta), grads.dbeta, 1e-3, 1e-4));
    const Vector device_dgamma = to_vector(dgamma), device_dbeta = to_vector(dbeta);
    args.accumulate_param_grads = true;
    kernels::layer_norm_backward(args);
    EXPECT_TRUE(all_close(to_vector(dgamma), Vector(2.0 * grads.dgamma), 1e-3, 1e-4));
    EXPECT_TRUE(all_close(to_vector(dbeta), Vector(2.0 * grads.dbeta), 1e-3, 1e-4));
    if (rows > 0 && rows < 100) {
      auto loss = [&](const Matrix& xx, const Vector& g, const Vector& b) {
        return reference::layer_norm(xx, g, b, eps).y.cwiseProduct(dy).sum();
      };
      EXPECT_TRUE(all_close(to_matrix(dx, rows, d), numeric_gradient([&](const Matrix& m) { return loss(m, gamma, beta); }, x),
                            kFdRtol, kFdAtol));
      EXPECT_TRUE(all_close(device_dgamma, numeric_gradient([&](const Vector& g) { return loss(x, g, beta); }, gamma),
                            kFdRtol, kFdAtol));
      EXPECT_TRUE(all_close(device_dbeta, numeric_gradient([&](const Vector& b) { return loss(x, gamma, b); }, beta),
                            kFdRtol, kFdAtol));
    }
  }
}

TEST(RmsNorm, ForwardBackwardAccumulateAndFiniteDifferences) {
  for (std::int64_t rows : {0, 1, 3, 127}) {
    SCOPED_TRACE(rows);
    const std::int64_t d = 10;
    const double eps = 1e-6;
    const Matrix x = random_matrix(rows, d, 111, 2.0), dy = random_matrix(rows, d, 112);
    const Vector gamma = random_vector(d, 113);
    Tensor xt = to_tensor(device(), x), gt = to_tensor(device(), gamma), dyt = to_tensor(device(), dy);
    Tensor y(device(), {rows, d}), rstd(device(), {rows}), dx(device(), {rows, d}), dgamma = Tensor::zeros(device(), {d});
    RmsNormArgs args{.x = &xt, .gamma = &gt, .rstd = &rstd, .epsilon = float(eps), .y = &y, .dy = &dyt, .dx = &dx,
                     .dgamma = &dgamma};
    kernels::rms_norm_forward(args);
    kernels::rms_norm_backward(args);
    EXPECT_TRUE(all_close(to_matrix(y, rows, d), reference::rms_norm(x, gamma, eps), kRtol, 1e-4));
    const auto grads = reference::rms_norm_backward(x, gamma, dy, eps);
    EXPECT_TRUE(all_close(to_matrix(dx, rows, d), grads.dx, 1e-3, 1e-4));
    EXPECT_TRUE(all_close(to_vector(dgamma), grads.dgamma, 1e-3, 1e-4));
    const Vector device_dgamma = to_vector(dgamma);
    args.accumulate_param_grads = true;
    kernels::rms_norm_backward(args);
    EXPECT_TRUE(all_close(to_vector(dgamma), Vector(2.0 * grads.dgamma), 1e-3, 1e-4));
    if (rows > 0 && rows < 100) {
      auto loss = [&](const Matrix& xx, const Vector& g) { return reference::rms_norm(xx, g, eps).cwiseProduct(dy).sum(); };
      EXPECT_TRUE(all_close(to_matrix(dx, rows, d), numeric_gradient([&](const Matrix& m) { return loss(m, gamma); }, x),
                            kFdRtol, kFdAtol));
      EXPECT_TRUE(all_close(device_dgamma, numeric_gradient([&](const Vector& g) { return loss(x, g); }, gamma), kFdRtol,
                            kFdAtol));
    }
  }
}

}  // namespace moerun::test
