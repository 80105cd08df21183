// FeedForwardSet: the FFNs of a set of experts (or the single FFN of a dense block), applied
// to rows grouped by expert with grouped matmuls. GELU experts: out = gelu(x W1) W2.
// SwiGLU experts: out = (silu(x W1) * (x W3)) W2. No biases (as Switch, Mixtral, DeepSeek).
// Keeps the pre-activations for backward and recomputes the activation there; with
// recompute_hidden, keeps only the input and recomputes the pre-activations too (one more
// matmul per weight that feeds the activation, in exchange for [rows, d_ff] per FFN input).
// Activations and dx take the input's dtype (bf16 under mixed precision); the matmuls read
// the weights' compute copies and accumulate weight gradients in fp32.
#pragma once

#include <span>
#include <vector>

#include "model/model_config.h"
#include "runtime/parameters.h"

namespace moerun {

class FeedForwardSet {
 public:
  // One FFN per id in expert_ids, named "<prefix>.<id>.w1" etc. kind Expert carries (layer, id).
  // create: register new parameters; otherwise use the ones already in `params` (experts
  // that arrived by migration).
  // d_ff: the hidden width (0 = model.d_ff; the shared experts have their own).
  FeedForwardSet(ParameterStore& params, const ModelConfig& config, const std::string& prefix,
                 const std::vector<int>& expert_ids, ParamKind kind, int layer, bool create = true, std::int64_t d_ff = 0);
  // The names of one FFN's weights ("<prefix>.<id>.w1", ...), in a fixed order.
  static std::vector<std::string> weight_names(const ModelConfig& config, const std::string& prefix, int id);
  // The shape of one of those weights: w2 is [d_ff, d_model], w1 and w3 [d_model, d_ff].
  static Shape weight_shape(const ModelConfig& config, const std::string& name, std::int64_t d_ff = 0);
  // x [rows, d] grouped by expert, counts[i] rows for the i-th FFN; x stays alive until backward.
  // Rows past the counted ones are padding (static shapes: expert slots no expert occupies):
  // every per-row kernel still covers them, so shapes do not change with the expert count, and
  // their outputs and gradients are zero.
  Tensor forward(const Tensor& x, std::span<const std::int64_t> counts);
  // Blockwise static shapes: x [blocks x block, d] in blocks of `block` rows, block i for the
  // labels[i]-th FFN (i32 [blocks, 1] on the device, -1: an unused place, whose rows come out
  // zero). Every matmul is one block_matmul: no shape depends on the routing, and the host
  // never reads the labels. x and labels stay alive until backward.
  Tensor forward_blocks(const Tensor& x, const Tensor& labels, std::int64_t block);
  Tensor backward(const Tensor& dy);  // returns dx [rows, d]; accumulates weight gradients
  std::size_t size() const { return experts_.size(); }
  // train.recompute = moe: forward drops x W1 (and x W3); backward recomputes them.
  void set_recompute_hidden(bool on) { recompute_hidden_ = on; }
  // Forgets what forward saved (train.recompute = full runs forward again before backward).
  void release();

 private:
  struct Weights {
    Parameter* w1;  // [d, ff]
    Parameter* w3;  // [d, ff], SwiGLU only
    Parameter* w2;  // [ff, d]
  };
  // forward() and forward_blocks() after their setup.
  Tensor run_forward(const Tensor& x);
  // Group views of `t` by the saved counts (blockwise: t whole).
  std::vector<Tensor> split(const Tensor& t) const;
  // out_i (+)= a_i op(w_i) for every expert i, w_i one of its weight matrices.
  void apply_weights(const std::vector<Tensor>& a, Parameter* Weights::*w, std::vector<Tensor>& out, bool transpose_w,
                     bool accumulate);
  // pre_ = x W1 (and up_ = x W3) for the saved input and counts.
  void compute_hidden(const std::vector<Tensor>& xs);
  // dw_i += a_i^T b_i for every expert i: a weight gradient.
  void accumulate_weight_grad(const std::vector<Tensor>& a, const std::vector<Tensor>& b, Parameter* Weights::*w);

  const ModelConfig& config_;
  std::int64_t d_ff_;
  std::vector<Weights> experts_;
  bool recompute_hidden_ = false;
  // A [rows, cols] buffer: zeroed when the input has padding rows that no matmul writes.
  Tensor rows_buffer(Device& dev, std::int64_t rows, std::int64_t cols, DType dtype) const;

  std::vector<std::int64_t> counts_;
  bool padded_ = false;
  const Tensor* labels_ = nullptr;  // blockwise: each block's FFN (null: grouped by counts_)
  std::int64_t block_ = 0;
  const Tensor* x_ = nullptr;
  Tensor pre_;  // [rows, ff]: x W1
  Tensor up_;   // [rows, ff]: x W3 (SwiGLU)
};

}  // namespace moerun
