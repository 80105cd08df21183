// Cross-entropy, top-k, gather / scatter-add and row_dot against the reference.
#include "kernels/index.h"
#include "kernels/loss.h"
#include "kernels/topk.h"
#include "runtime/error.h"
#include "test_util.h"

namespace moerun::test {

TEST(CrossEntropy, ForwardBackwardIgnoreLabelAndFiniteDifferences) {
  for (std::int64_t rows : {0, 1, 3, 127}) {
    SCOPED_TRACE(rows);
    const std::int64_t v = 13;
    const std::int32_t ignore = -100;
    const Matrix logits = random_matrix(rows, v, 121, 3.0);
    reference::Index labels(static_cast<std::size_t>(rows));
    for (std::int64_t i = 0; i < rows; ++i) labels[static_cast<std::size_t>(i)] = (i % 4 == 2) ? ignore : static_cast<std::int32_t>((i * 7) % v);
    Tensor lt = to_tensor(device(), logits), lab = to_tensor(device(), labels), probs(device(), {rows, v}), dl(device(), {rows, v});
    Tensor loss = Tensor::from_host(device(), {2}, std::vector<float>{100.0f, 7.0f});
    CrossEntropyArgs args{.logits = &lt, .labels = &lab, .ignore_label = ignore, .probs = &probs, .loss = &loss,
                          .dlogits = &dl};
    kernels::cross_entropy_forward(args);  // overwrites
    std::vector<float> r = loss.to_host();
    const auto ref = reference::cross_entropy(logits, labels, ignore);
    EXPECT_EQ(r[1], float(ref.count));
    EXPECT_NEAR(r[0], ref.loss_sum, 1e-4 * std::max(1.0, std::abs(ref.loss_sum)));
    args.accumulate = true;  // adds: the trainer sums micro-batches on the device
    kernels::cross_entropy_forward(args);
    r = loss.to_host();
    EXPECT_EQ(r[1], float(2 * ref.count));
    EXPECT_NEAR(r[0], 2.0 * ref.loss_sum, 2e-4 * std::max(1.0, std::abs(ref.loss_sum)));
    args.scale = ref.count > 0 ? 1.0f / static_cast<float>(ref.count) : 1.0f;
    kernels::cross_entropy_backward(args);
    EXPECT_TRUE(all_close(to_matrix(dl, rows, v), reference::cross_entropy_backward(logits, labels, ignore, args.scale), kRtol, kAtol));
    if (rows > 0 && rows < 100) {
      const Matrix fd = numeric_gradient(
          [&](const Matrix& m) { return reference::cross_entropy(m, labels, ignore).loss_sum * args.scale; }, logits);
      EXPECT_TRUE(all_close(to_matrix(dl, rows, v), fd, kFdRtol, kFdAtol));
    }
  }
}

// A large vocabulary, and labels whose probability underflows fp32 (a logit 200 below the
// rest: the loss is 200 + log(v), taken from the row in double rather than from log(0)).
TEST(CrossEntropy, LargeVocabularyAndUnderflowingLabels) {
  const std::int64_t rows = 5, v = 32000;
  Matrix logits = random_matrix(rows, v, 123, 2.0);
  const reference::Index labels = {7, 31999, 12345, 0, 25000};
  logits(1, 31999) = -200.0;
  logits(3, 0) = -150.0;
  Tensor lt = to_tensor(device(), logits), lab = to_tensor(device(), labels), probs(device(), {rows, v}), loss(device(), {2});
  kernels::cross_entropy_forward({.logits = &lt, .labels = &lab, .probs = &probs, .loss = &loss});
  const std::vector<float> r = loss.to_host();
  const auto ref = reference::cross_entropy(logits, labels, -1);
  EXPECT_EQ(r[1], float(rows));
  EXPECT_GT(ref.loss_sum, 350.0);
  EXPECT_NEAR(r[0], ref.loss_sum, 1e-5 * ref.loss_sum);
}

TEST(CrossEntropy, RejectsLabelsOutsideTheVocabulary) {
  Tensor logits = Tensor::zeros(device(), {2, 4}), probs(device(), {2, 4}), loss(device(), {2});
  Tensor labels = to_tensor(device(), reference::Index{1, 4});
  EXPECT_THROW(kernels::cross_entropy_forward({.logits = &logits, .labels = &labels, .probs = &probs, .loss = &loss}),
               KernelError);
  EXPECT_THROW(kernels::cross_entropy_forward({.logits = &logits, .labels = &labels, .probs = &probs}), KernelError);
}

TEST(TopK, MatchesReferenceWithDeterministicTies) {
  for (int k : {1, 2, 5}) {
    const Matrix x = random_matrix(127, 5, 131);
    Tensor xt = to_tensor(device(), x), vals(device(), {127, k}), idx(device(), {127, k}, DType::I32);
    kernels::top_k({.x = &xt, .values = &vals, .indices = &idx});
    const auto ref = reference::top_k(x, k);
    EXPECT_TRUE(all_close(to_matrix(vals, 127, k), ref.values, 0, 0));
    EXPECT_EQ(idx.to_host_i32(), ref.indices);
  }
  Tensor ties = Tensor::from_host(device(), {1, 4}, std::vector<float>{1, 3, 3, 1});
  Tensor vals(device(), {1, 3}), idx(device(), {1, 3}, DType::I32);
  kernels::top_k({.x = &ties, .values = &vals, .indices = &idx});
  EXPECT_EQ(idx.to_host_i32(), (std::vector<std::int32_t>{1, 2, 0}));
}

// Every fourth index is -1, a padding row (static shapes): zeros gathered, nothing scattered.
TEST(IndexRows, GatherScatterWithScaleAndTheirGradients) {
  for (std::int64_t n : {0, 1, 3, 127}) {
    SCOPED_TRACE(n);
    const std::int64_t m = 9, d = 6;
    const Matrix src = random_matrix(m, d, 141);
    reference::Index index(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) index[static_cast<std::size_t>(i)] = i % 4 == 2 ? -1 : static_cast<std::int32_t>((i * 5 + 3) % m);
    const Vector scale = random_vector(n, 142);
    const Matrix w = random_matrix(n, d, 143);  // upstream gradient of the gathered rows
    Tensor st = to_tensor(device(), src), it = to_tensor(device(), index), sc = to_tensor(device(), scale);
    Tensor gathered(device(), {n, d});
    kernels::gather_rows({.src = &st, .index = &it, .scale = &sc, .dst = &gathered});
    EXPECT_TRUE(all_close(to_matrix(gathered, n, d), reference::gather_rows(src, index, &scale), kRtol, kAtol));
    if (n > 2) EXPECT_TRUE(to_matrix(gathered, n, d).row(2).isZero()) << "a padding row must gather zeros";
    // Gradients of L = <w, gather(src, index) * scale>: dsrc = scatter_add(w * scale), dscale = row_dot(gather(src), w).
    Tensor wt = to_tensor(device(), w), dsrc = Tensor::zeros(device(), {m, d}), plain(device(), {n, d}), dscale(device(), {n});
    kernels::scatter_add_rows({.src = &wt, .index = &it, .scale = &sc, .dst = &dsrc});
    kernels::gather_rows({.src = &st, .index = &it, .dst = &plain});
    kernels::row_dot({.a = &plain, .b = &wt, .out = &dscale});
    EXPECT_TRUE(all_close(to_matrix(dsrc, m, d), reference::scatter_add_rows(w, index, Matrix::Zero(m, d), &scale), kRtol, kAtol));
    if (n > 0 && n < 100) {
      auto loss = [&](const Matrix& s, const Vector& c) { return reference::gather_rows(s, index, &c).cwiseProduct(w).sum(); };
      EXPECT_TRUE(all_close(to_matrix(dsrc, m, d), numeric_gradient([&](const Matrix& s) { return loss(s, scale); }, src),
                            kFdRtol, kFdAtol));
      EXPECT_TRUE(all_close(to_vector(dscale), numeric_gradient([&](const Vector& c) { return loss(src, c); }, scale), kFdRtol,
                            kFdAtol));
    }
  }
}

TEST(IndexRows, OutOfRangeIndexIsAnError) {
  Tensor src = Tensor::zeros(device(), {3, 2}), dst(device(), {1, 2});
  for (std::int32_t bad : {3, -2}) {
    Tensor idx = to_tensor(device(), reference::Index{bad});
    try {
      kernels::gather_rows({.src = &src, .index = &idx, .dst = &dst});
      FAIL() << "expected KernelError";
    } catch (const KernelError& e) {
      EXPECT_NE(std::string(e.what()).find("gather_rows"), std::string::npos) << e.what();
    }
  }
}

}  // namespace moerun::test
