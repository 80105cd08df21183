// Bad arguments name the kernel and the shapes; steady-state calls create no primitives.
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/softmax.h"
#include "runtime/error.h"
#include "runtime/kernel_profile.h"
#include "runtime/cpu/cpu_device.h"
#include "test_util.h"
#include "expect_error.h"

namespace moerun::test {

TEST(KernelErrors, ShapeMismatchNamesKernelAndShapes) {
  Tensor a(device(), {3, 4}), b(device(), {5, 2}), c(device(), {3, 2});
  expect_error<KernelError>([&] { kernels::matmul({.a = &a, .b = &b, .c = &c}); }, {"[matmul]", "[3, 4]", "[5, 2]"});
  Tensor b2(device(), {4, 2}), c_wrong(device(), {3, 3});
  expect_error<KernelError>([&] { kernels::matmul({.a = &a, .b = &b2, .c = &c_wrong}); }, {"[matmul]", "[3, 3]"});
  Tensor x(device(), {2, 3}), y(device(), {3, 2});
  expect_error<KernelError>([&] { kernels::softmax_forward({.x = &x, .out = &y}); }, {"[softmax_forward]", "[2, 3]", "[3, 2]"});
}

TEST(KernelErrors, WrongDtypeIsRejected) {
  Tensor a(device(), {2, 2}, DType::I32), b(device(), {2, 2}), c(device(), {2, 2});
  expect_error<KernelError>([&] { kernels::matmul({.a = &a, .b = &b, .c = &c}); }, {"[matmul]", "f32", "i32"});
  Tensor h(device(), {4}, DType::BF16), o(device(), {4});
  expect_error<KernelError>([&] { kernels::activation_forward({.x = &h, .out = &o}); }, {"[activation_forward]", "bf16"});
}

TEST(KernelErrors, TensorsOnDifferentDevicesAreRejected) {
  CpuDevice other;
  Tensor a(device(), {2, 2}), b(other, {2, 2}), c(device(), {2, 2});
  expect_error<KernelError>([&] { kernels::matmul({.a = &a, .b = &b, .c = &c}); }, {"[matmul]", "different devices"});
}

TEST(KernelErrors, MissingAndUndefinedArguments) {
  Tensor a(device(), {2, 2}), c(device(), {2, 2});
  expect_error<KernelError>([&] { kernels::matmul({.a = &a, .b = nullptr, .c = &c}); }, {"[matmul]", "'b'"});
  Tensor moved = std::move(a);
  expect_error<KernelError>([&] { kernels::matmul({.a = &a, .b = &moved, .c = &c}); }, {"[matmul]", "undefined"});
}

TEST(KernelErrors, GroupedMatmulGroupsMustShareShapes) {
  Tensor a1(device(), {3, 4}), a2(device(), {3, 5}), w1(device(), {4, 2}), w2(device(), {5, 2}), c1(device(), {3, 2}),
      c2(device(), {3, 2});
  expect_error<KernelError>([&] { kernels::grouped_matmul({{{.a = &a1, .b = &w1, .c = &c1}, {.a = &a2, .b = &w2, .c = &c2}}}); },
                      {"[grouped_matmul]", "[3, 5]"});
}

TEST(PrimitiveCache, SteadyStateCreatesNoPrimitives) {
  CpuDevice dev;
  auto created = [&] { return dev.kernels().primitives_created(dev); };
  Tensor a = to_tensor(dev, random_matrix(32, 16, 1)), w = to_tensor(dev, random_matrix(16, 8, 2)), y(dev, {32, 8});
  Tensor g(dev, {32, 8}), gamma = Tensor::zeros(dev, {8}), beta = Tensor::zeros(dev, {8}), mean(dev, {32}), var(dev, {32});
  Tensor qkv = to_tensor(dev, random_matrix(2 * 4, 3 * 8, 3)), probs(dev, {2, 2, 4, 4}), att(dev, {8, 8}), dqkv(dev, {8, 24});
  std::vector<Tensor> rows;
  for (std::int64_t r : {5, 9, 17}) rows.push_back(to_tensor(dev, random_matrix(r, 16, 4)));
  std::vector<Tensor> outs;
  for (std::int64_t r : {5, 9, 17}) outs.emplace_back(dev, Shape{r, 8});
  auto step = [&] {
    kernels::matmul({.a = &a, .b = &w, .c = &y});
    kernels::activation_forward({.activation = Activation::Gelu, .x = &y, .out = &g});
    kernels::activation_backward({.activation = Activation::Gelu, .x = &y, .dy = &g, .out = &g});
    kernels::layer_norm_forward({.x = &g, .gamma = &gamma, .beta = &beta, .mean = &mean, .variance = &var, .y = &y});
    kernels::attention_forward({.batch = 2, .seq = 4, .heads = 2, .qkv = &qkv, .probs = &probs, .out = &att});
    kernels::attention_backward({.batch = 2, .seq = 4, .heads = 2, .qkv = &qkv, .probs = &probs, .dout = &att, .dqkv = &dqkv});
    GroupedMatmulArgs grouped;
    for (std::size_t i = 0; i < rows.size(); ++i) grouped.groups.push_back({.a = &rows[i], .b = &w, .c = &outs[i]});
    kernels::grouped_matmul(grouped);
  };
  step();
  const auto after_first = created();
  EXPECT_GT(after_first, 0);
  for (int i = 0; i < 5; ++i) step();
  EXPECT_EQ(created(), after_first);
  // Grouped matmul: a bounded set of primitives per shape, then none whatever the token counts.
  auto grouped_with_rows = [&](std::int64_t r) {
    Tensor x(dev, {r, 16}), y1(dev, {r, 8}), dy = Tensor::zeros(dev, {r, 8}), dx(dev, {r, 16}), dw(dev, {16, 8});
    kernels::grouped_matmul({{{.a = &x, .b = &w, .c = &y1}}});
    kernels::grouped_matmul({{{.a = &dy, .b = &w, .c = &dx, .transpose_b = true}}});
    kernels::grouped_matmul({{{.a = &x, .b = &dy, .c = &dw, .transpose_a = true}}});
  };
  grouped_with_rows(2047);  // 1024 + 512 + ... + 16 + 15: every tile size and a remainder
  const auto warmed = created();
  EXPECT_LE(warmed - after_first, 3 + 8 + 1) << "more primitives than the documented bound";
  for (std::int64_t r : {1, 33, 129, 700, 1500, 4000}) grouped_with_rows(r);
  EXPECT_EQ(created(), warmed);
}

// The expert FFN's activations see a new row count nearly every step. Element-wise kernels run
// in power-of-two pieces, so row counts whose pieces were all seen create nothing (before,
// every new count made a primitive, and a long run's memory grew with them).
TEST(PrimitiveCache, ElementWiseKernelsOnNewRowCountsCreateNone) {
  CpuDevice dev;
  auto created = [&] { return dev.kernels().primitives_created(dev); };
  for (DType dtype : {DType::F32, DType::BF16}) {
    auto ffn_activations = [&](std::int64_t rows) {
      Tensor x = Tensor::zeros(dev, {rows, 8}, dtype), y(dev, {rows, 8}, dtype), up = Tensor::zeros(dev, {rows, 8}, dtype);
      kernels::activation_forward({.activation = Activation::Gelu, .x = &x, .out = &y});
      kernels::activation_backward({.activation = Activation::Gelu, .x = &x, .dy = &y, .out = &y});
      kernels::swiglu_forward({.gate = &x, .up = &up, .y = &y});
    };
    ffn_activations(63);  // 504 values: pieces 256, 128, 64, 32, 16, 8
    const auto warmed = created();
    for (std::int64_t rows : {1, 3, 5, 17, 33, 47, 62}) ffn_activations(rows);
    EXPECT_EQ(created(), warmed) << dtype_name(dtype);
  }
}

}  // namespace moerun::test

namespace moerun::test {

TEST(KernelProfile, CountsCallsPerKernelOnlyWhileAttached) {
  CpuDevice dev;
  Tensor a = to_tensor(dev, random_matrix(8, 4, 1)), b = to_tensor(dev, random_matrix(4, 3, 2)), c(dev, {8, 3});
  kernels::matmul({.a = &a, .b = &b, .c = &c});
  KernelProfile profile;
  dev.set_profile(&profile);
  kernels::matmul({.a = &a, .b = &b, .c = &c});
  kernels::matmul({.a = &a, .b = &b, .c = &c});
  kernels::softmax_forward({.x = &c, .out = &c});
  dev.set_profile(nullptr);
  kernels::matmul({.a = &a, .b = &b, .c = &c});
  ASSERT_EQ(profile.entries().size(), 2u);
  EXPECT_EQ(profile.entries().at("matmul").calls, 2);
  EXPECT_EQ(profile.entries().at("softmax_forward").calls, 1);
  EXPECT_GE(profile.total_seconds(), 0.0);
}

}  // namespace moerun::test
