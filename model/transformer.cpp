#include "model/transformer.h"

#include "model/param_names.h"

#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "runtime/error.h"
#include "runtime/trace.h"
#include "runtime/vocab.h"

namespace moerun {

// One pre-norm block: x1 = x + attn(ln1(x)); x2 = x1 + ffn(ln2(x1)), ffn MoE or dense.
struct Transformer::Block {
  Block(ParameterStore& params, const ModelConfig& config, int layer, TokenDispatcher& dispatcher, Readout& readout)
      : layer(layer),
        ln1(make_norm(config.norm, params, block_prefix(layer) + ".ln1", config.d_model, config.compute_dtype)),
        attention(params, config, block_prefix(layer) + ".attention"),
        ln2(make_norm(config.norm, params, block_prefix(layer) + ".ln2", config.d_model, config.compute_dtype)) {
    if (config.is_moe_layer(layer)) {
      moe = std::make_unique<MoeLayer>(params, config, layer, dispatcher, readout);
    } else {
      dense = std::make_unique<FeedForwardSet>(params, config, block_prefix(layer) + ".ffn",
                                               std::vector<int>{0}, ParamKind::Dense, layer);
    }
  }

  Tensor forward(Tensor input, std::int64_t batch) {
    const trace::Scope span("forward", "forward", layer);
    x = std::move(input);
    batch_size = batch;
    Tensor x2 = compute();
    if (recompute == Recompute::Full) release_saved();  // backward runs compute() again from x
    return x2;
  }

  Tensor backward(const Tensor& dx2, double aux_scale) {
    const trace::Scope span("backward", "backward", layer);
    if (recompute == Recompute::Full) {
      const trace::Scope again("recompute", "recompute forward", layer);
      if (moe) moe->set_recomputing(true);  // its counts and losses were added by the first forward
      compute();  // the same inputs and weights: the same activations, router choices and exchange
      if (moe) moe->set_recomputing(false);
    }
    Tensor dh2 = moe ? moe->backward(dx2, aux_scale) : dense->backward(dx2);
    Tensor dx1 = ln2->backward(dh2);
    kernels::axpy({.x = &dx2, .y = &dx1});  // the residual path
    dh2 = Tensor();
    Tensor dh = attention.backward(dx1);
    Tensor dx = ln1->backward(dh);
    kernels::axpy({.x = &dx1, .y = &dx});
    for (Tensor* t : {&x, &h, &x1, &h2}) *t = Tensor();
    return dx;
  }

  void set_recompute(Recompute r) {
    recompute = r;
    if (moe) moe->set_recompute_experts(r == Recompute::Moe);
  }

  // The block from its saved input x: saves what backward needs and returns the output.
  Tensor compute() {
    return residual_block(x, [&](const Tensor& hn) { return attention.forward(hn, batch_size); });
  }

  // Decoding: x [n, d] at positions after `past`; the cache's layer rows are extended. The same
  // block as compute(), attending to the cache; nothing is kept.
  Tensor decode(const Tensor& input, Tensor& keys, Tensor& values, std::int64_t past) {
    Tensor out = residual_block(input, [&](const Tensor& hn) { return attention.decode(hn, keys, values, past); });
    release_saved();
    return out;
  }

  // x1 = input + attend(ln1(input)), returns x1 + ffn(ln2(x1)); keeps h, x1 and h2.
  template <class Attend>
  Tensor residual_block(const Tensor& input, Attend&& attend) {
    h = ln1->forward(input);
    Tensor a = attend(h);
    x1 = Tensor(input.device(), input.shape());
    kernels::binary({.op = BinaryOp::Add, .a = &input, .b = &a, .out = &x1});
    a = Tensor();
    h2 = ln2->forward(x1);
    const std::int64_t rows[] = {h2.dim(0)};
    Tensor f = moe ? moe->forward(h2) : dense->forward(h2, rows);
    Tensor x2(input.device(), input.shape());
    kernels::binary({.op = BinaryOp::Add, .a = &x1, .b = &f, .out = &x2});
    return x2;
  }

  // Everything but the input x.
  void release_saved() {
    ln1->release();
    attention.release();
    ln2->release();
    if (moe) {
      moe->release();
    } else {
      dense->release();
    }
    for (Tensor* t : {&h, &x1, &h2}) *t = Tensor();
  }

  int layer;
  std::unique_ptr<Norm> ln1;
  AttentionLayer attention;
  std::unique_ptr<Norm> ln2;
  std::unique_ptr<MoeLayer> moe;
  std::unique_ptr<FeedForwardSet> dense;
  Tensor x, h, x1, h2;  // saved activations, [n, d] each
  std::int64_t batch_size = 0;
  Recompute recompute = Recompute::None;
};

Transformer::Transformer(const ModelConfig& config, ParameterStore& params, TokenDispatcher& dispatcher)
    : Transformer(config, params, std::vector<TokenDispatcher*>(static_cast<std::size_t>(config.n_layers), &dispatcher)) {}

Transformer::Transformer(const ModelConfig& config, ParameterStore& params, const std::vector<TokenDispatcher*>& dispatchers)
    : config_(config), readout_(params.device()), loss_slot_(readout_.reserve(2)), embedding_(params, config) {
  for (int l = 0; l < config.n_layers; ++l)
    blocks_.push_back(std::make_unique<Block>(params, config, l, *dispatchers.at(static_cast<std::size_t>(l)), readout_));
  MOERUN_CHECK(params.compute_dtype() == config.compute_dtype, RuntimeError,
               "[model] the parameters' compute dtype {} differs from the model's {}", dtype_name(params.compute_dtype()),
               dtype_name(config.compute_dtype));
  final_norm_ = make_norm(config.norm, params, "final_norm", config.d_model, config.compute_dtype);
  lm_head_ = config.tie_embeddings ? &embedding_.token_table()
                                   : &params.add("lm_head", {config.vocab_size, config.d_model}, Init::Normal);
}

Transformer::~Transformer() = default;

void Transformer::set_recompute(Recompute r) {
  for (auto& block : blocks_) block->set_recompute(r);
}

Tensor Transformer::forward(const Tensor& tokens, std::int64_t batch) {
  Tensor x = embedding_.forward(tokens, batch);
  for (auto& block : blocks_) x = block->forward(std::move(x), batch);
  final_in_ = std::move(x);
  const trace::Scope span("forward", "lm head");
  final_out_ = final_norm_->forward(final_in_);
  Tensor logits(tokens.device(), {final_out_.dim(0), config_.vocab_size});  // fp32 for the cross-entropy
  kernels::matmul({.a = &final_out_, .b = &lm_head_->compute(), .c = &logits, .transpose_b = true});
  return logits;
}

Tensor Transformer::decode(const Tensor& tokens, KvCache& cache) {
  const std::int64_t n = tokens.dim(0), past = cache.length;
  MOERUN_CHECK(past + n <= cache.capacity(), RuntimeError, "[decode] {} cached + {} new positions exceed the cache's {}",
               past, n, cache.capacity());
  MOERUN_CHECK(config_.position == PositionKind::Rope || past + n <= config_.seq_len, RuntimeError,
               "[decode] position {} is past model.seq_len = {}, the last learned position", past + n - 1, config_.seq_len);
  Tensor x = embedding_.forward_at(tokens, past);
  for (auto& block : blocks_) {
    const auto l = static_cast<std::size_t>(block->layer);
    x = block->decode(x, cache.keys[l], cache.values[l], past);
  }
  cache.length = past + n;
  Tensor out = final_norm_->forward(x);
  final_norm_->release();
  Tensor logits(tokens.device(), {n, config_.vocab_size});
  kernels::matmul({.a = &out, .b = &lm_head_->compute(), .c = &logits, .transpose_b = true});
  return logits;
}

void Transformer::backward(const Tensor& dlogits, double aux_scale) {
  std::optional<trace::Scope> head_span(std::in_place, "backward", "lm head");
  Tensor dfinal(dlogits.device(), final_out_.shape());
  kernels::matmul({.a = &dlogits, .b = &lm_head_->compute(), .c = &dfinal});  // [n, V] x [V, d]
  kernels::matmul({.a = &dlogits, .b = &final_out_, .c = &lm_head_->grad, .transpose_a = true, .accumulate = true});
  Tensor dx = final_norm_->backward(dfinal);
  final_out_ = Tensor();
  final_in_ = Tensor();
  head_span.reset();
  for (int l = static_cast<int>(blocks_.size()) - 1; l >= 0; --l) {
    dx = blocks_[static_cast<std::size_t>(l)]->backward(dx, aux_scale);
    if (backward_hook_) backward_hook_(l);
  }
  embedding_.backward(dx);
  if (backward_hook_) backward_hook_(-1);
}

std::vector<MoeStats> Transformer::moe_stats() const {
  std::vector<MoeStats> out;
  for (const auto& b : blocks_)
    if (b->moe) out.push_back(b->moe->stats());
  return out;
}

void Transformer::reset_stats() {
  readout_.clear();
  for (const auto& b : blocks_)
    if (b->moe) b->moe->reset_stats();
}

MoeLayer& Transformer::moe_layer(int block) { return *blocks_.at(static_cast<std::size_t>(block))->moe; }

std::vector<int> Transformer::moe_layer_ids() const {
  std::vector<int> out;
  for (int l = 0; l < static_cast<int>(blocks_.size()); ++l)
    if (blocks_[static_cast<std::size_t>(l)]->moe) out.push_back(l);
  return out;
}

}  // namespace moerun
