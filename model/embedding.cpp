#include "model/embedding.h"

#include "kernels/elementwise.h"
#include "kernels/index.h"
#include "runtime/vocab.h"

namespace moerun {

Embedding::Embedding(ParameterStore& params, const ModelConfig& config)
    : config_(config),
      tokens_table_(params.add("embedding.tokens", {config.vocab_size, config.d_model}, Init::Normal)),
      positions_table_(config.position == PositionKind::Learned
                           ? &params.add("embedding.positions", {config.seq_len, config.d_model}, Init::Normal)
                           : nullptr) {}

Tensor Embedding::forward(const Tensor& tokens, std::int64_t batch) {
  tokens_ = &tokens;
  batch_ = batch;
  const std::int64_t t = config_.seq_len, d = config_.d_model;
  Tensor x(tokens.device(), {batch * t, d});
  kernels::gather_rows({.src = &tokens_table_.value, .index = &tokens, .dst = &x});
  if (positions_table_ == nullptr) return x;
  Tensor per_sequence = x.reshaped({batch, t * d});  // [batch, seq_len * d]
  Tensor positions = positions_table_->value.reshaped({t * d});
  kernels::binary({.op = BinaryOp::Add, .a = &per_sequence, .b = &positions, .out = &per_sequence});
  return x;
}

Tensor Embedding::forward_at(const Tensor& tokens, std::int64_t first_position) const {
  const std::int64_t n = tokens.dim(0), d = config_.d_model;
  Tensor x(tokens.device(), {n, d});
  kernels::gather_rows({.src = &tokens_table_.value, .index = &tokens, .dst = &x});
  if (positions_table_ == nullptr) return x;
  const Tensor rows = positions_table_->value.rows(first_position, first_position + n);
  kernels::binary({.op = BinaryOp::Add, .a = &x, .b = &rows, .out = &x});
  return x;
}

void Embedding::backward(const Tensor& dx) {
  const std::int64_t t = config_.seq_len, d = config_.d_model;
  kernels::scatter_add_rows({.src = &dx, .index = tokens_, .dst = &tokens_table_.grad});
  tokens_ = nullptr;
  if (positions_table_ == nullptr) return;
  const Tensor per_sequence = dx.reshaped({batch_, t * d});
  Tensor dpos = positions_table_->grad.reshaped({t * d});
  kernels::sum_rows({.x = &per_sequence, .out = &dpos, .accumulate = true});
}

}  // namespace moerun
