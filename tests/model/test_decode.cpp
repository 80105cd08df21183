// Decoding with a KV cache computes the training forward's function: a prefill then one token
// at a time gives the logits of forward() on the whole sequence, for the GPT-2-like block
// (LayerNorm, learned positions, GELU, softmax router) and the DeepSeek-MoE-like one (RMSNorm,
// RoPE, SwiGLU, shared experts, sigmoid router with an aux-free bias set), in fp32 and bf16.
#include <random>

#include "model/transformer.h"
#include "runtime/error.h"
#include "runtime/vocab.h"
#include "test_util.h"

namespace moerun::test {
namespace {

ModelConfig small(bool deepseek, DType dtype) {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 3;
  c.n_heads = 4;
  c.seq_len = 16;
  c.experts = 8;
  c.top_k = 2;
  c.d_ff = 24;
  c.capacity_factor = 0.0;  // dropless: a token's experts do not depend on the other tokens
  c.dense_every = 3;
  c.init_std = 0.2;
  c.compute_dtype = dtype;
  if (deepseek) {
    c.norm = NormKind::RmsNorm;
    c.position = PositionKind::Rope;
    c.expert_type = ExpertType::SwiGlu;
    c.shared_experts = 1;
    c.router_score = RouterScore::Sigmoid;
    c.z_loss_coef = 0.0;
    c.balance = Balance::AuxFree;
    c.tie_embeddings = false;
  }
  c.validate();
  return c;
}

void expect_decode_equals_forward(bool deepseek, DType dtype) {
  const ModelConfig config = small(deepseek, dtype);
  TestDevice dev;
  ParameterStore params(dev, 42, config.init_std, dtype);
  LocalTokenDispatcher dispatcher(static_cast<int>(config.experts));
  Transformer model(config, params, dispatcher);
  std::mt19937 rng(3);
  for (Buffer* b : params.buffers()) {  // an aux-free bias that changes choices
    std::vector<float> bias(static_cast<std::size_t>(b->value.numel()));
    for (float& v : bias) v = static_cast<float>(int(rng() % 5) - 2) * 0.05f;
    b->value.copy_from_host(bias);
  }
  std::vector<std::int32_t> ids(static_cast<std::size_t>(config.seq_len));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % vocab::kSize);
  const Tensor all = Tensor::from_host(dev, {config.seq_len}, ids);
  const Matrix full = to_matrix(model.forward(all, 1));
  KvCache cache(dev, config, config.seq_len);
  Matrix decoded(config.seq_len, config.vocab_size);
  const std::int64_t prefill = 5;
  for (std::int64_t pos = 0; pos < config.seq_len;) {
    const std::int64_t n = pos == 0 ? prefill : 1;
    const std::vector<std::int32_t> chunk(ids.begin() + pos, ids.begin() + pos + n);
    const Tensor tokens = Tensor::from_host(dev, {n}, chunk);
    decoded.middleRows(pos, n) = to_matrix(model.decode(tokens, cache));
    pos += n;
  }
  EXPECT_EQ(cache.length, config.seq_len);
  // fp32: 1e-5. bf16: the full forward's attention rounds its probabilities to bf16 before the
  // product with v, decoding keeps them in fp32; the logits agree to bf16's resolution.
  if (dtype == DType::F32) {
    EXPECT_TRUE(all_close(decoded, full, 1e-5, 1e-5));
  } else {
    EXPECT_LT((decoded - full).norm() / full.norm(), 0.02);  // measured 0.6-0.7%
  }
  const Tensor one = Tensor::from_host(dev, {1}, std::vector<std::int32_t>{1});
  EXPECT_THROW(model.decode(one, cache), RuntimeError);  // the cache is full
}

}  // namespace

TEST(Decode, KvCacheEqualsFullForwardGpt2Block) { expect_decode_equals_forward(false, DType::F32); }
TEST(Decode, KvCacheEqualsFullForwardDeepSeekBlock) { expect_decode_equals_forward(true, DType::F32); }
TEST(Decode, KvCacheEqualsFullForwardBf16) {
  expect_decode_equals_forward(false, DType::BF16);
  expect_decode_equals_forward(true, DType::BF16);
}

}  // namespace moerun::test
