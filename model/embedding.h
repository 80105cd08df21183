// Token embedding, plus a learned position embedding when model.position = learned (with RoPE
// the attention layers encode positions). The token table doubles as the LM head when
// embeddings are tied (the Transformer reads it through token_table()).
#pragma once

#include "model/model_config.h"
#include "runtime/parameters.h"

namespace moerun {

class Embedding {
 public:
  Embedding(ParameterStore& params, const ModelConfig& config);
  // tokens: i32 [batch * seq_len], kept by the caller until backward. Returns [batch * seq_len, d].
  Tensor forward(const Tensor& tokens, std::int64_t batch);
  // Decoding: tokens i32 [n] at positions [first_position, first_position + n) of one sequence.
  // Returns [n, d]; keeps nothing.
  Tensor forward_at(const Tensor& tokens, std::int64_t first_position) const;
  // Accumulates the gradients of both tables from dx [batch * seq_len, d].
  void backward(const Tensor& dx);
  Parameter& token_table() { return tokens_table_; }

 private:
  const ModelConfig& config_;
  Parameter& tokens_table_;     // [vocab, d]
  Parameter* positions_table_;  // [seq_len, d]; null with RoPE
  const Tensor* tokens_ = nullptr;
  std::int64_t batch_ = 0;
};

}  // namespace moerun
