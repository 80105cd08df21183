// bf16 in every kernel that accepts it, against the Eigen reference in double. Tolerances
// come from bf16's 8 significant bits (u = 2^-8 bounds the relative rounding error of one
// value, round-to-nearest halves it) and the reduction length:
//  - a matmul whose operand is rounded to bf16 errs by at most 2u * sum_k |a_ik| |b_kj| (each
//    product's two roundings), plus u |c| when c is stored in bf16, plus fp32 accumulation;
//  - a point-wise kernel on bf16 inputs is compared with the reference on the same rounded
//    inputs: only the output's rounding (u |y|) and fp32 arithmetic remain.
// The same tests run with ONEDNN_MAX_CPU_ISA=AVX2 (CTest kernels_bf16_emulated), which takes
// the path of a CPU without bf16 instructions.
#include <cstdlib>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "kernels/index.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "runtime/bfloat16.h"
#include "runtime/error.h"
#include "test_util.h"

namespace moerun::test {
namespace {

constexpr double kU = kBf16Epsilon;

// Every entry of actual within bound(i) of expected; reports the worst entry.
::testing::AssertionResult within(const Matrix& actual, const Matrix& expected, const Matrix& bound) {
  for (Eigen::Index i = 0; i < actual.size(); ++i) {
    const double err = std::abs(actual.data()[i] - expected.data()[i]);
    if (!(err <= bound.data()[i])) {
      return ::testing::AssertionFailure() << "entry " << i << ": got " << actual.data()[i] << ", expected "
                                           << expected.data()[i] << ", error " << err << " over the bound " << bound.data()[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// u |expected| + a small absolute floor: one bf16 rounding of each output.
Matrix output_rounding(const Matrix& expected, double floor = 1e-6) {
  return (expected.array().abs() * kU + floor).matrix();
}

const char* dtype_label(DType t) { return t == DType::BF16 ? "bf16" : "f32"; }

}  // namespace

TEST(Bf16, ConvertRoundsToNearestEvenLikeTheHost) {
  // Ties in both directions, values that round up into the next binade, the extremes, NaN,
  // and enough values for the chunked conversion path plus a remainder.
  std::vector<float> values = {1.0f, 1.00390625f, 1.01171875f, -1.00390625f, 3.0e38f, -0.0f, 1e-40f, 65504.0f,
                               std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
  const Matrix noise = random_matrix(1, 5000, 3, 10.0);
  for (Eigen::Index i = 0; i < noise.size(); ++i) values.push_back(static_cast<float>(noise.data()[i]));
  const auto n = static_cast<std::int64_t>(values.size());
  Tensor f = Tensor::from_host(device(), {n}, values), b(device(), {n}, DType::BF16), back(device(), {n});
  kernels::convert(f, b);
  kernels::convert(b, back);
  const std::vector<float> got = back.to_host();
  for (std::size_t i = 0; i < values.size(); ++i) {
    const float want = bf16_to_float(float_to_bf16(values[i]));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got[i])) << i;
    } else if (std::fpclassify(values[i]) == FP_SUBNORMAL) {
      // bf16 instructions (vcvtneps2bf16) treat subnormal inputs as zero; the host keeps them.
      EXPECT_TRUE(got[i] == want || got[i] == 0.0f) << "value " << i << " = " << values[i];
    } else {
      EXPECT_EQ(got[i], want) << "value " << i << " = " << values[i];
    }
  }
  EXPECT_EQ(got[1], 1.0f) << "a tie rounds to the even neighbour";
  EXPECT_EQ(got[2], 1.015625f) << "a tie rounds to the even neighbour (up)";
}

TEST(Bf16, MatmulEveryDtypeCombinationWithinTheRoundingBound) {
  const std::int64_t m = 37, k = 129, n = 19;
  for (DType ta : {DType::F32, DType::BF16})
    for (DType tb : {DType::F32, DType::BF16})
      for (DType tc : {DType::F32, DType::BF16})
        for (int trans = 0; trans < 3; ++trans)
          for (int acc = 0; acc < 2; ++acc) {
            if (ta == DType::F32 && tb == DType::F32 && tc == DType::F32) continue;  // test_matmul's job
            const bool tra = trans == 1, trb = trans == 2;
            SCOPED_TRACE(::testing::Message() << "a " << dtype_label(ta) << " b " << dtype_label(tb) << " c "
                                              << dtype_label(tc) << " transpose " << trans << " acc " << acc);
            const Matrix a = tra ? random_matrix(k, m, 1) : random_matrix(m, k, 1);
            const Matrix b = trb ? random_matrix(n, k, 2) : random_matrix(k, n, 2);
            const Matrix c0 = rounded(random_matrix(m, n, 4));  // representable in both dtypes
            Tensor at = to_tensor_as(device(), a, ta), bt = to_tensor_as(device(), b, tb), c = to_tensor_as(device(), c0, tc);
            kernels::matmul({.a = &at, .b = &bt, .c = &c, .transpose_a = tra, .transpose_b = trb, .accumulate = acc == 1});
            Matrix expected = reference::matmul(a, b, tra, trb);
            if (acc) expected += c0;
            const Matrix magnitude = reference::matmul(a.cwiseAbs(), b.cwiseAbs(), tra, trb);
            Matrix bound = (2 * kU + 1e-5) * magnitude;
            if (tc == DType::BF16) bound += output_rounding(expected);
            EXPECT_TRUE(within(to_matrix(c), expected, bound));
            // Not vacuous: the bound is far below the products' size.
            EXPECT_LT(bound.maxCoeff(), 0.1 * magnitude.maxCoeff());
          }
}

// 4500 rows: a hot expert, which the bf16 forward computes 2048 rows at a time.
TEST(Bf16, GroupedMatmulAllThreeRolesWithinTheRoundingBound) {
  const std::int64_t d = 32, f = 48;
  const std::vector<std::int64_t> tokens = {0, 3, 130, 17, 4500};
  std::vector<Matrix> xs, ws, dys;
  std::vector<Tensor> xt, wt, yt, dyt, dxt, dwt;
  for (std::size_t e = 0; e < tokens.size(); ++e) {
    xs.push_back(rounded(random_matrix(tokens[e], d, 10 + e)));
    ws.push_back(random_matrix(d, f, 20 + e));
    dys.push_back(rounded(random_matrix(tokens[e], f, 30 + e)));
    xt.push_back(to_tensor_as(device(), xs.back(), DType::BF16));
    wt.push_back(to_tensor_as(device(), ws.back(), DType::BF16));
    dyt.push_back(to_tensor_as(device(), dys.back(), DType::BF16));
    yt.emplace_back(device(), Shape{tokens[e], f}, DType::BF16);
    dxt.emplace_back(device(), Shape{tokens[e], d}, DType::BF16);
    dwt.push_back(Tensor::zeros(device(), {d, f}));  // fp32 gradient accumulation buffers
  }
  GroupedMatmulArgs fwd, data, weight;
  for (std::size_t e = 0; e < tokens.size(); ++e) {
    fwd.groups.push_back({.a = &xt[e], .b = &wt[e], .c = &yt[e]});
    data.groups.push_back({.a = &dyt[e], .b = &wt[e], .c = &dxt[e], .transpose_b = true});
    weight.groups.push_back({.a = &xt[e], .b = &dyt[e], .c = &dwt[e], .transpose_a = true, .accumulate = true});
  }
  kernels::grouped_matmul(fwd);
  kernels::grouped_matmul(data);
  kernels::grouped_matmul(weight);
  for (std::size_t e = 0; e < tokens.size(); ++e) {
    SCOPED_TRACE(e);
    const Matrix y = reference::matmul(xs[e], ws[e], false, false);
    EXPECT_TRUE(within(to_matrix(yt[e], tokens[e], f), y,
                       (2 * kU + 1e-5) * reference::matmul(xs[e].cwiseAbs(), ws[e].cwiseAbs(), false, false) + output_rounding(y)));
    const Matrix dx = reference::matmul(dys[e], ws[e], false, true);
    EXPECT_TRUE(within(to_matrix(dxt[e], tokens[e], d), dx,
                       (2 * kU + 1e-5) * reference::matmul(dys[e].cwiseAbs(), ws[e].cwiseAbs(), false, true) + output_rounding(dx)));
    // x and dy are bf16 values already: the weight gradient is exact up to fp32 accumulation.
    const Matrix dw = reference::matmul(xs[e], dys[e], true, false);
    EXPECT_TRUE(all_close(to_matrix(dwt[e], d, f), dw, kRtol, kAtol * std::sqrt(double(tokens[e] + 1))));
  }
}

TEST(Bf16, ActivationsAndSwiGluOnBf16MatchTheReferenceOnTheRoundedInputs) {
  const std::int64_t n = 33, f = 70;
  const Matrix x = rounded(random_matrix(n, f, 41, 2.0)), up = rounded(random_matrix(n, f, 42)),
               dy = rounded(random_matrix(n, f, 43));
  Tensor xt = to_tensor_as(device(), x, DType::BF16), upt = to_tensor_as(device(), up, DType::BF16),
         dyt = to_tensor_as(device(), dy, DType::BF16);
  Tensor y(device(), {n, f}, DType::BF16), dx(device(), {n, f}, DType::BF16);
  kernels::activation_forward({.activation = Activation::Gelu, .x = &xt, .out = &y});
  EXPECT_TRUE(within(to_matrix(y), reference::gelu(x), output_rounding(reference::gelu(x), 1e-5)));
  kernels::activation_backward({.activation = Activation::Gelu, .x = &xt, .dy = &dyt, .out = &dx});
  const Matrix dgelu = reference::gelu_backward(x, dy);
  EXPECT_TRUE(within(to_matrix(dx), dgelu, output_rounding(dgelu, 1e-5)));
  Tensor sy(device(), {n, f}, DType::BF16), dgate(device(), {n, f}, DType::BF16), dup(device(), {n, f}, DType::BF16);
  kernels::swiglu_forward({.gate = &xt, .up = &upt, .y = &sy});
  const Matrix swiglu = reference::swiglu(x, up);
  // Two roundings inside (silu(gate), then the product) when the CPU computes in bf16.
  EXPECT_TRUE(within(to_matrix(sy), swiglu, 2 * output_rounding(swiglu, 1e-5)));
  kernels::swiglu_backward({.gate = &xt, .up = &upt, .dy = &dyt, .dgate = &dgate, .dup = &dup});
  const auto grads = reference::swiglu_backward(x, up, dy);
  EXPECT_TRUE(within(to_matrix(dgate), grads.dgate, 3 * output_rounding(grads.dgate, 1e-5)));
  EXPECT_TRUE(within(to_matrix(dup), grads.dup, 2 * output_rounding(grads.dup, 1e-5)));
}

TEST(Bf16, LayerNormTakesFp32InAndWritesBf16Out) {
  const std::int64_t rows = 41, d = 24;
  const double eps = 1e-5;
  const Matrix x = random_matrix(rows, d, 51, 2.0), dy = rounded(random_matrix(rows, d, 52));
  const Vector gamma = random_vector(d, 53), beta = random_vector(d, 54);
  Tensor xt = to_tensor(device(), x), gt = to_tensor(device(), gamma), bt = to_tensor(device(), beta);
  Tensor dyt = to_tensor_as(device(), dy, DType::BF16), y(device(), {rows, d}, DType::BF16), mean(device(), {rows}),
         var(device(), {rows}), dx(device(), {rows, d}), dgamma = Tensor::zeros(device(), {d}),
         dbeta = Tensor::zeros(device(), {d});
  LayerNormArgs args{.x = &xt, .gamma = &gt, .beta = &bt, .mean = &mean, .variance = &var, .epsilon = float(eps), .y = &y,
                     .dy = &dyt, .dx = &dx, .dgamma = &dgamma, .dbeta = &dbeta};
  kernels::layer_norm_forward(args);
  kernels::layer_norm_backward(args);
  const auto ref = reference::layer_norm(x, gamma, beta, eps);
  EXPECT_TRUE(within(to_matrix(y), ref.y, output_rounding(ref.y, 1e-5)));
  EXPECT_TRUE(all_close(to_vector(mean), ref.mean, kRtol, kAtol));  // statistics stay fp32
  const auto grads = reference::layer_norm_backward(x, gamma, dy, eps);
  EXPECT_TRUE(all_close(to_matrix(dx), grads.dx, 1e-3, 1e-4));
  EXPECT_TRUE(all_close(to_vector(dgamma), grads.dgamma, 1e-3, 1e-4));
}

TEST(Bf16, AttentionOnBf16QkvMatchesTheReferenceOnTheRoundedInput) {
  const int b = 2, t = 9, h = 2, hd = 4;
  const std::int64_t d = h * hd;
  const Matrix qkv = rounded(random_matrix(b * t, 3 * d, 61)), dout = rounded(random_matrix(b * t, d, 62));
  Tensor qt = to_tensor_as(device(), qkv, DType::BF16), dot = to_tensor_as(device(), dout, DType::BF16);
  Tensor probs(device(), {b, h, t, t}), out(device(), {b * t, d}, DType::BF16), dqkv(device(), {b * t, 3 * d}, DType::BF16);
  AttentionArgs args{.batch = b, .seq = t, .heads = h, .qkv = &qt, .probs = &probs, .out = &out, .dout = &dot, .dqkv = &dqkv};
  kernels::attention_forward(args);
  kernels::attention_backward(args);
  // Where the CPU has bf16 instructions, the fp32 probabilities (and score gradients) are
  // rounded to bf16 as operands of the next product: out = sum_j p_ij v_j errs by at most
  // u sum_j p_ij |v_j| <= u max|v| (the p_ij sum to 1), plus the output's rounding. The
  // gradients are bounded the same way by a few u times their largest entry.
  const auto ref = reference::attention(qkv, b, t, h);
  const double v_max = qkv.rightCols(d).cwiseAbs().maxCoeff();
  EXPECT_TRUE(within(to_matrix(out), ref.out, (output_rounding(ref.out, 1e-4).array() + kU * v_max).matrix()));
  EXPECT_TRUE(all_close(to_matrix(probs, b * h * t, t), ref.probs, kRtol, kAtol));  // softmax stays fp32
  const Matrix dref = reference::attention_backward(qkv, b, t, h, dout);
  EXPECT_TRUE(within(to_matrix(dqkv), dref, (output_rounding(dref, 1e-4).array() + 4 * kU * dref.cwiseAbs().maxCoeff()).matrix()));
}

TEST(Bf16, GatherScatterAndRowDotAcrossDtypes) {
  const std::int64_t m = 11, d = 40;
  const Matrix src = rounded(random_matrix(m, d, 71));
  const std::vector<std::int32_t> idx = {3, 0, 10, 3, 7, 7, 1};
  const auto n = static_cast<std::int64_t>(idx.size());
  const Vector scale = random_vector(n, 72);
  const reference::Index index = idx;
  Tensor it = to_tensor(device(), idx), st = to_tensor(device(), scale);
  for (DType from : {DType::F32, DType::BF16})
    for (DType to : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(::testing::Message() << dtype_label(from) << " -> " << dtype_label(to));
      Tensor srct = to_tensor_as(device(), src, from), g(device(), {n, d}, to), gs(device(), {n, d}, to);
      kernels::gather_rows({.src = &srct, .index = &it, .dst = &g});
      EXPECT_TRUE(all_close(to_matrix(g), reference::gather_rows(src, index), 0.0, 0.0)) << "bf16 values copy exactly";
      kernels::gather_rows({.src = &srct, .index = &it, .scale = &st, .dst = &gs});
      const Matrix scaled = reference::gather_rows(src, index, &scale);
      EXPECT_TRUE(within(to_matrix(gs), scaled, to == DType::BF16 ? output_rounding(scaled) : (scaled.array().abs() * 1e-6).matrix()));
      Tensor acc = Tensor::zeros(device(), {m, d}, to);
      kernels::scatter_add_rows({.src = &g, .index = &it, .scale = &st, .dst = &acc});
      const Matrix summed = reference::scatter_add_rows(reference::gather_rows(src, index), index, Matrix::Zero(m, d), &scale);
      // Rows 3 and 7 receive two additions, each rounded when the destination is bf16: the
      // error is at most u per addition times the sum of the terms' sizes.
      const Vector abs_scale = scale.cwiseAbs();
      const Matrix sizes =
          reference::scatter_add_rows(reference::gather_rows(src, index).cwiseAbs(), index, Matrix::Zero(m, d), &abs_scale);
      EXPECT_TRUE(within(to_matrix(acc), summed, ((to == DType::BF16 ? 2 * kU : 1e-6) * sizes.array() + 1e-7).matrix()));
      Tensor dots(device(), {n});
      kernels::row_dot({.a = &g, .b = &g, .out = &dots});
      const Vector want = reference::gather_rows(src, index).rowwise().squaredNorm();
      EXPECT_TRUE(all_close(to_vector(dots), want, 1e-5, 1e-5));
    }
}

TEST(Bf16, BinaryAddsABf16BranchToTheFp32Stream) {
  const Matrix x = random_matrix(9, 13, 81), branch = rounded(random_matrix(9, 13, 82));
  Tensor xt = to_tensor(device(), x), bt = to_tensor_as(device(), branch, DType::BF16), out(device(), {9, 13});
  kernels::binary({.op = BinaryOp::Add, .a = &xt, .b = &bt, .out = &out});
  EXPECT_TRUE(all_close(to_matrix(out), x + branch, 1e-6, 1e-6));
}

TEST(Bf16, KernelsThatStayFp32RefuseBf16WithTheirNames) {
  Tensor x(device(), {4, 4}, DType::BF16), y(device(), {4, 4});
  try {
    kernels::axpy({.x = &x, .y = &y});
    FAIL() << "axpy accepted a bf16 x";
  } catch (const KernelError& e) {
    EXPECT_NE(std::string(e.what()).find("[axpy] x must be f32 but is bf16"), std::string::npos) << e.what();
  }
}

TEST(Bf16, DevicePathSaysNativeOrEmulated) {
  const std::string path = device().dtype_path(DType::BF16);
  const char* isa = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (isa != nullptr && std::string(isa) == "AVX2") {
    EXPECT_EQ(path.rfind("emulated", 0), 0u) << path;
  } else {
    EXPECT_TRUE(path.rfind("native", 0) == 0 || path.rfind("emulated", 0) == 0) << path;
  }
}

}  // namespace moerun::test
