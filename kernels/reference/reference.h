// Independent reference versions of every kernel, written with Eigen in double precision
// and straight from the textbook formulas. Used by tests only, to check the backends'
// forward outputs and backward gradients (and as the function that finite differences
// differentiate). Never on a training path.
#pragma once

#include <Eigen/Dense>

#include <cstdint>
#include <vector>

namespace moerun::reference {

using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vector = Eigen::VectorXd;
using Index = std::vector<std::int32_t>;

Matrix matmul(const Matrix& a, const Matrix& b, bool transpose_a, bool transpose_b, const Vector* bias = nullptr);

Matrix gelu(const Matrix& x);  // exact (erf) GELU
Matrix gelu_backward(const Matrix& x, const Matrix& dy);
Matrix silu(const Matrix& x);
Matrix silu_backward(const Matrix& x, const Matrix& dy);
Matrix swiglu(const Matrix& gate, const Matrix& up);
struct SwiGluGrads {
  Matrix dgate, dup;
};
SwiGluGrads swiglu_backward(const Matrix& gate, const Matrix& up, const Matrix& dy);

Matrix softmax_rows(const Matrix& x);
Matrix softmax_rows_backward(const Matrix& y, const Matrix& dy);

struct LayerNormOut {
  Matrix y;
  Vector mean, variance;
};
LayerNormOut layer_norm(const Matrix& x, const Vector& gamma, const Vector& beta, double eps);
struct NormGrads {
  Matrix dx;
  Vector dgamma, dbeta;
};
NormGrads layer_norm_backward(const Matrix& x, const Vector& gamma, const Matrix& dy, double eps);
Matrix rms_norm(const Matrix& x, const Vector& gamma, double eps);
NormGrads rms_norm_backward(const Matrix& x, const Vector& gamma, const Matrix& dy, double eps);  // dbeta empty

struct CrossEntropy {
  double loss_sum = 0.0;
  std::int64_t count = 0;
};
CrossEntropy cross_entropy(const Matrix& logits, const Index& labels, std::int32_t ignore_label);
Matrix cross_entropy_backward(const Matrix& logits, const Index& labels, std::int32_t ignore_label, double scale);

struct TopK {
  Matrix values;
  Index indices;  // row-major [n, k]
};
TopK top_k(const Matrix& x, int k);

Matrix gather_rows(const Matrix& src, const Index& index, const Vector* scale = nullptr);
// dst is the initial value of the destination.
Matrix scatter_add_rows(const Matrix& src, const Index& index, Matrix dst, const Vector* scale = nullptr);

// fp8 e4m3 with one scale per block of `block` values of each row (scale = block max / 448):
// the values x takes after quantization and dequantization, found by searching the 254 finite
// e4m3 values for the nearest (ties to the even code), and the scales [rows, d / block].
struct Fp8RoundTrip {
  Matrix values;
  Matrix scales;
};
Fp8RoundTrip fp8_round_trip(const Matrix& x, int block);

// RoPE on the q and k parts of qkv [b*t, 3d] (half-split pairs; see RopeArgs), in double.
Matrix rope(const Matrix& qkv, int seq, int heads, double theta, bool inverse = false, int first_position = 0);

struct Attention {
  Matrix out;    // [b*t, d]
  Matrix probs;  // [b*h*t, t]
};
Attention attention(const Matrix& qkv, int batch, int seq, int heads);
Matrix attention_backward(const Matrix& qkv, int batch, int seq, int heads, const Matrix& dout);

struct Router {
  Matrix probs;
  Vector lse;
  Index index;  // [n, k]
  Matrix gates;
};
// sigmoid: scores s = sigmoid(logits), probs = s / sum(s), lse = log(sum(s)); else the softmax.
// bias (optional): added to the scores for the choice of the k, not to the gates.
// aux_weight [groups, e]: d loss / d probs for each run of n / groups tokens.
Router router(const Matrix& logits, int k, bool renormalize, bool sigmoid = false, const Vector* bias = nullptr);
Matrix router_backward(const Matrix& logits, int k, bool renormalize, const Matrix& dgates, const Matrix& aux_weight,
                       double z_scale, bool sigmoid = false, const Vector* bias = nullptr);

// DispatchLayoutArgs's three layouts (runtime/kernel_table.h), from per-expert lists of the
// kept copies. split and slot_of: row-major [experts, ep], empty for the sorted layout.
struct DispatchLayout {
  Index token_of_row, gate_of_row, labels;
  std::vector<std::int64_t> assigned, kept;
};
DispatchLayout dispatch_layout(const Index& index, int k, int experts, std::int64_t capacity, const Index& split,
                               const Index& slot_of, int ep, std::int64_t slots, std::int64_t block, std::int64_t blocks);

struct AdamWState {
  Vector param, m, v;
};
AdamWState adamw(AdamWState s, const Vector& grad, double lr, double beta1, double beta2, double eps, double weight_decay,
                 std::int64_t step);

}  // namespace moerun::reference
