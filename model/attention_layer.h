// Causal multi-head self-attention: qkv projection, the attention core kernel, output
// projection. Keeps qkv, the attention probabilities and the head outputs for backward. With
// model.position = rope, q and k are rotated after the projection (and their gradients back).
// The qkv projection has no bias (as LLaMA): a key bias adds the same amount to every score
// of a query, which softmax ignores, so its gradient is identically zero; Adam would turn the
// float noise in that zero into parameter drift that depends on summation order (and so on
// the parallel layout).
#pragma once

#include "model/model_config.h"
#include "runtime/kernel_table.h"
#include "runtime/parameters.h"

namespace moerun {

class AttentionLayer {
 public:
  AttentionLayer(ParameterStore& params, const ModelConfig& config, const std::string& name);
  // h [batch * seq_len, d], kept alive by the caller until backward.
  Tensor forward(const Tensor& h, std::int64_t batch);
  Tensor backward(const Tensor& dy);  // returns dh
  void release();  // forgets what forward saved
  // Decoding: h [n, d] of one sequence's next n positions after the `past` held in keys and
  // values ([capacity, d], extended here). Returns [n, d]; keeps nothing.
  Tensor decode(const Tensor& h, Tensor& keys, Tensor& values, std::int64_t past) const;

 private:
  RopeArgs rope_args(Tensor& qkv, bool inverse) const;

  const ModelConfig& config_;
  Parameter& w_qkv_;  // [d, 3d]
  Parameter& w_out_;  // [d, d]
  Parameter& b_out_;  // [d]
  const Tensor* h_ = nullptr;
  std::int64_t batch_ = 0;
  Tensor qkv_;    // [n, 3d]
  Tensor probs_;  // [batch, heads, seq, seq]
  Tensor heads_;  // [n, d] attention output before the projection
};

}  // namespace moerun
