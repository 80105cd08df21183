// Helpers shared by the tests: random host data, Tensor <-> Eigen conversions,
// tolerance comparisons, and a central finite-difference gradient.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "kernels/reference/reference.h"
#include "runtime/bfloat16.h"
#include "runtime/tensor.h"
#include "test_device.h"

namespace moerun::test {

using reference::Matrix;
using reference::Vector;

inline Matrix random_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, scale);
  Matrix m(rows, cols);
  for (std::int64_t i = 0; i < rows * cols; ++i) m.data()[i] = static_cast<float>(dist(rng));  // representable in f32
  return m;
}

inline Vector random_vector(std::int64_t n, std::uint64_t seed, double scale = 1.0) {
  const Matrix m = random_matrix(n, 1, seed, scale);
  return Eigen::Map<const Vector>(m.data(), n);
}

inline Tensor to_tensor(Device& dev, const Matrix& m) {
  std::vector<float> v(static_cast<std::size_t>(m.size()));
  for (Eigen::Index i = 0; i < m.size(); ++i) v[static_cast<std::size_t>(i)] = static_cast<float>(m.data()[i]);
  return Tensor::from_host(dev, {m.rows(), m.cols()}, v);
}

// m in the given dtype (bf16: rounded to nearest even), and m rounded as bf16 stores it.
inline Tensor to_tensor_as(Device& dev, const Matrix& m, DType dtype) {
  std::vector<float> v(static_cast<std::size_t>(m.size()));
  for (Eigen::Index i = 0; i < m.size(); ++i) v[static_cast<std::size_t>(i)] = static_cast<float>(m.data()[i]);
  return Tensor::from_host(dev, {m.rows(), m.cols()}, v, dtype);
}
inline Matrix rounded(const Matrix& m) {
  Matrix r = m;
  for (Eigen::Index i = 0; i < r.size(); ++i) r.data()[i] = bf16_to_float(float_to_bf16(static_cast<float>(r.data()[i])));
  return r;
}

inline Tensor to_tensor(Device& dev, const Vector& x) {
  std::vector<float> v(static_cast<std::size_t>(x.size()));
  for (Eigen::Index i = 0; i < x.size(); ++i) v[static_cast<std::size_t>(i)] = static_cast<float>(x(i));
  return Tensor::from_host(dev, {x.size()}, v);
}

inline Tensor to_tensor(Device& dev, const std::vector<std::int32_t>& idx) {
  return Tensor::from_host(dev, {static_cast<std::int64_t>(idx.size())}, idx);
}

inline Matrix to_matrix(const Tensor& t, std::int64_t rows, std::int64_t cols) {
  const std::vector<float> v = t.to_host();
  Matrix m(rows, cols);
  for (std::int64_t i = 0; i < rows * cols; ++i) m.data()[i] = v[static_cast<std::size_t>(i)];
  return m;
}
inline Matrix to_matrix(const Tensor& t) { return to_matrix(t, t.dim(0), t.numel() / std::max<std::int64_t>(1, t.dim(0))); }

inline Vector to_vector(const Tensor& t) {
  const std::vector<float> v = t.to_host();
  Vector x(static_cast<Eigen::Index>(v.size()));
  for (std::size_t i = 0; i < v.size(); ++i) x(static_cast<Eigen::Index>(i)) = v[i];
  return x;
}

// Every entry within atol + rtol * |expected|; reports the worst entry.
inline ::testing::AssertionResult all_close(const Matrix& actual, const Matrix& expected, double rtol, double atol) {
  if (actual.rows() != expected.rows() || actual.cols() != expected.cols()) {
    return ::testing::AssertionFailure() << "shape " << actual.rows() << "x" << actual.cols() << " vs expected "
                                         << expected.rows() << "x" << expected.cols();
  }
  double worst = 0.0;
  Eigen::Index wi = -1;
  for (Eigen::Index i = 0; i < actual.size(); ++i) {
    const double a = actual.data()[i], e = expected.data()[i];
    const double excess = std::abs(a - e) - (atol + rtol * std::abs(e));
    if (!(excess <= 0.0) && (wi < 0 || excess > worst)) {
      worst = excess;
      wi = i;
    }
  }
  if (wi < 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "entry " << wi << ": got " << actual.data()[wi] << ", expected "
                                       << expected.data()[wi] << " (rtol " << rtol << ", atol " << atol << ")";
}

inline ::testing::AssertionResult all_close(const Vector& actual, const Vector& expected, double rtol, double atol) {
  return all_close(Matrix(Eigen::Map<const Matrix>(actual.data(), actual.size(), 1)),
                   Matrix(Eigen::Map<const Matrix>(expected.data(), expected.size(), 1)), rtol, atol);
}

// Central finite-difference gradient of a scalar function of x (in double precision).
inline Matrix numeric_gradient(const std::function<double(const Matrix&)>& f, Matrix x, double h = 1e-5) {
  Matrix g(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    const double saved = x.data()[i];
    x.data()[i] = saved + h;
    const double up = f(x);
    x.data()[i] = saved - h;
    const double down = f(x);
    x.data()[i] = saved;
    g.data()[i] = (up - down) / (2.0 * h);
  }
  return g;
}

inline Vector numeric_gradient(const std::function<double(const Vector&)>& f, const Vector& x, double h = 1e-5) {
  Matrix m = Eigen::Map<const Matrix>(x.data(), x.size(), 1);
  const Matrix g = numeric_gradient([&](const Matrix& mm) { return f(Eigen::Map<const Vector>(mm.data(), mm.size())); }, m, h);
  return Eigen::Map<const Vector>(g.data(), g.size());
}

// Tolerances for comparing an fp32 kernel with a double reference.
constexpr double kRtol = 1e-4;
constexpr double kAtol = 1e-5;
// Device gradients (fp32) against finite differences of the double reference.
constexpr double kFdRtol = 2e-3;
constexpr double kFdAtol = 2e-4;

}  // namespace moerun::test
