// Whole-model gradient check: for every parameter tensor, the directional derivative of the
// total loss (cross-entropy + aux + z-loss) along a random direction, by central finite
// differences of the forward, against <grad, direction> from backward. Covers embeddings,
// attention (learned and rotary positions), norms (LayerNorm and RMSNorm), router (softmax and
// sigmoid scores, the aux-free selection bias, the aux per micro-batch and per sequence, the
// z-loss), routed and shared experts and dense FFN blocks.
#include <random>

#include "kernels/elementwise.h"
#include "model/lm_loss.h"
#include "runtime/vocab.h"
#include "runtime/error.h"
#include "test_util.h"

namespace moerun::test {
namespace {

struct Fixture {
  ModelConfig config;
  std::int64_t batch = 2;
  std::vector<std::int32_t> tokens, targets;
};

Fixture make_fixture(ExpertType type, std::int64_t top_k, double capacity_factor) {
  Fixture f;
  f.config.d_model = 16;
  f.config.n_layers = 3;
  f.config.n_heads = 2;
  f.config.seq_len = 8;
  f.config.experts = 4;
  f.config.top_k = top_k;
  f.config.d_ff = 24;
  f.config.capacity_factor = capacity_factor;
  f.config.expert_type = type;
  f.config.dense_every = 3;     // block 2 is dense
  f.config.aux_loss_coef = 0.5;  // large, so a wrong aux gradient shows
  f.config.z_loss_coef = 0.1;
  f.config.init_std = 0.3;       // large enough that routing is not uniform
  f.config.validate();
  std::mt19937 rng(5);
  for (std::int64_t i = 0; i < f.batch * f.config.seq_len; ++i) {
    f.tokens.push_back(static_cast<std::int32_t>(rng() % vocab::kSize));
    f.targets.push_back(i % 5 == 0 ? vocab::kIgnore : static_cast<std::int32_t>(rng() % 256));
  }
  return f;
}

double total_loss(const LossSums& l) { return l.ce_sum / double(l.targets) + l.aux + l.z; }

void check_gradients(const Fixture& f) {
  TestDevice dev;
  ParameterStore params(dev, 42, f.config.init_std);
  LocalTokenDispatcher dispatcher(static_cast<int>(f.config.experts));
  Transformer model(f.config, params, dispatcher);
  // Aux-free balancing: a bias as large as the scores' spread, so that it changes choices.
  std::mt19937 bias_rng(11);
  for (Buffer* b : params.buffers()) {
    std::vector<float> bias(static_cast<std::size_t>(b->value.numel()));
    for (float& v : bias) v = static_cast<float>(int(bias_rng() % 5) - 2) * 0.1f;
    b->value.copy_from_host(bias);
  }
  Tensor tokens = Tensor::from_host(dev, {static_cast<std::int64_t>(f.tokens.size())}, f.tokens);
  Tensor targets = Tensor::from_host(dev, {static_cast<std::int64_t>(f.targets.size())}, f.targets);
  const LossSums base = forward_loss(model, tokens, targets, f.batch);
  params.zero_grads();
  forward_backward(model, tokens, targets, f.batch, {.ce_scale = 1.0 / double(base.targets), .aux_scale = 1.0});
  ASSERT_GT(base.aux, 0.0);
  if (f.config.z_loss_coef > 0) {
    ASSERT_GT(base.z, 0.0);
  }
  std::mt19937_64 rng(7);
  int checked = 0;
  for (Parameter* p : params.all()) {
    SCOPED_TRACE(p->name);
    const std::vector<float> value = p->value.to_host(), grad = p->grad.to_host();
    std::vector<float> dir(value.size());
    std::normal_distribution<double> dist(0.0, 1.0);
    double norm = 0.0;
    for (float& v : dir) {
      v = static_cast<float>(dist(rng));
      norm += double(v) * v;
    }
    double analytic = 0.0;
    for (std::size_t i = 0; i < dir.size(); ++i) {
      dir[i] = static_cast<float>(dir[i] / std::sqrt(norm));
      analytic += double(grad[i]) * dir[i];
    }
    const double eps = 3e-3;
    auto loss_at = [&](double t) {
      std::vector<float> moved(value.size());
      for (std::size_t i = 0; i < value.size(); ++i) moved[i] = static_cast<float>(value[i] + t * dir[i]);
      p->value.copy_from_host(moved);
      return total_loss(forward_loss(model, tokens, targets, f.batch));
    };
    const double numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps);
    p->value.copy_from_host(value);
    EXPECT_NEAR(analytic, numeric, 2e-3 + 0.03 * std::abs(numeric)) << "analytic " << analytic << " numeric " << numeric;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(params.all().size()));
}

}  // namespace

TEST(ModelGradients, GeluTopTwoDropless) { check_gradients(make_fixture(ExpertType::Gelu, 2, 0.0)); }
TEST(ModelGradients, GeluTopTwoWithCapacityDropping) { check_gradients(make_fixture(ExpertType::Gelu, 2, 0.6)); }
TEST(ModelGradients, SwiGluTopOne) { check_gradients(make_fixture(ExpertType::SwiGlu, 1, 1.25)); }
// Dropless: with a capacity, the shared output moves the next layer's routing onto drop ties
// that finite differences cross (tried: every gradient below layer 1 then disagrees).
TEST(ModelGradients, SharedExpertsBesideTheRoutedOnes) {  // DeepSeek-MoE: always-active experts
  Fixture f = make_fixture(ExpertType::Gelu, 2, 0.0);
  f.config.shared_experts = 2;
  f.config.shared_d_ff = 12;
  check_gradients(f);
}
TEST(ModelGradients, RmsNormRopeSwiGlu) {  // the Llama / Mixtral block: RMSNorm, rotary positions, SwiGLU
  Fixture f = make_fixture(ExpertType::SwiGlu, 2, 0.0);
  f.config.norm = NormKind::RmsNorm;
  f.config.position = PositionKind::Rope;
  f.config.rope_theta = 100.0;  // large angles at seq 8, so a wrong rotation shows
  check_gradients(f);
}

TEST(ModelGradients, SigmoidRouterSequenceAuxLoss) {  // DeepSeek-V3's scores and sequence-wise loss
  Fixture f = make_fixture(ExpertType::SwiGlu, 2, 0.0);
  f.config.router_score = RouterScore::Sigmoid;
  f.config.z_loss_coef = 0.0;
  f.config.balance = Balance::SeqAuxLoss;
  check_gradients(f);
}
TEST(ModelGradients, SoftmaxSequenceAuxLossWithCapacity) {
  Fixture f = make_fixture(ExpertType::Gelu, 2, 0.0);
  f.config.balance = Balance::SeqAuxLoss;
  check_gradients(f);
}
TEST(ModelGradients, AuxFreeBiasSigmoidSharedExperts) {  // the DeepSeek-MoE block, the bias set
  Fixture f = make_fixture(ExpertType::SwiGlu, 2, 0.0);
  f.config.router_score = RouterScore::Sigmoid;
  f.config.z_loss_coef = 0.0;
  f.config.balance = Balance::AuxFree;  // with aux_loss_coef > 0: plus the sequence-wise loss
  f.config.shared_experts = 1;
  f.config.norm = NormKind::RmsNorm;
  check_gradients(f);
}

// Aux-free balancing moves each expert's bias by rate * sign(mean - count) per step, changes
// the choice and never the gates (tests/kernels/test_router.cpp), and has no gradient.
TEST(AuxFreeBalancing, BiasFollowsTheSignOfTheGap) {
  ModelConfig config;
  config.balance = Balance::AuxFree;
  config.balance_rate = 0.25;  // a power of two: exact sums
  config.experts = 4;
  config.validate();
  TestDevice dev;
  ParameterStore params(dev, 42, config.init_std);
  LocalTokenDispatcher dispatcher(static_cast<int>(config.experts));
  Transformer model(config, params, dispatcher);
  ASSERT_EQ(params.buffers().size(), 3u);  // one per MoE layer
  EXPECT_EQ(params.buffers().front()->name, "layers.0.moe.router_bias");
  for (int block : model.moe_layer_ids()) {
    model.moe_layer(block).after_step({10, 30, 20, 20});  // mean 20
    model.moe_layer(block).after_step({10, 30, 40, 0});
  }
  for (const Buffer* b : params.buffers()) EXPECT_EQ(b->value.to_host(), (std::vector<float>{0.5f, -0.5f, -0.25f, 0.25f}));
  for (const Parameter* p : params.all()) EXPECT_EQ(p->name.find("router_bias"), std::string::npos);
}

// Gradient accumulation: backward of micro-batch A then B must equal grad(A) + grad(B) for
// every parameter (every gradient write in backward must add, not overwrite).
TEST(ModelGradients, AccumulateAcrossMicroBatches) {
  const Fixture f = make_fixture(ExpertType::Gelu, 2, 1.0);
  TestDevice dev;
  ParameterStore params(dev, 42, f.config.init_std);
  LocalTokenDispatcher dispatcher(static_cast<int>(f.config.experts));
  Transformer model(f.config, params, dispatcher);
  const std::int64_t n = f.batch * f.config.seq_len;
  std::vector<std::int32_t> tokens_b(f.tokens.rbegin(), f.tokens.rend());
  Tensor ta = Tensor::from_host(dev, {n}, f.tokens), tb = Tensor::from_host(dev, {n}, tokens_b);
  Tensor targets = Tensor::from_host(dev, {n}, f.targets);
  const LossScales scales{.ce_scale = 0.01, .aux_scale = 0.5};
  auto grads_of = [&](std::initializer_list<const Tensor*> batches) {
    params.zero_grads();
    for (const Tensor* t : batches) forward_backward(model, *t, targets, f.batch, scales);
    std::vector<std::vector<float>> g;
    for (Parameter* p : params.all()) g.push_back(p->grad.to_host());
    return g;
  };
  const auto ga = grads_of({&ta}), gb = grads_of({&tb}), gab = grads_of({&ta, &tb});
  for (std::size_t i = 0; i < params.all().size(); ++i) {
    SCOPED_TRACE(params.all()[i]->name);
    for (std::size_t j = 0; j < ga[i].size(); ++j) {
      ASSERT_NEAR(gab[i][j], ga[i][j] + gb[i][j], 1e-6 + 1e-4 * std::abs(ga[i][j] + gb[i][j])) << "entry " << j;
    }
  }
}

// Activation recomputation changes memory, not math: every gradient equals the one computed
// with every activation kept (rtol 1e-6), and the activations alive between forward and
// backward shrink: none > moe > full.
void check_recompute(const Fixture& f) {
  struct Outcome {
    std::vector<std::vector<float>> grads;
    std::size_t saved_bytes = 0;  // device bytes alive after forward, before backward
    std::size_t peak_bytes = 0;   // the high-water mark of forward and backward
  };
  auto run = [&](Recompute mode) {
    TestDevice dev;
    ParameterStore params(dev, 42, f.config.init_std);
    LocalTokenDispatcher dispatcher(static_cast<int>(f.config.experts));
    Transformer model(f.config, params, dispatcher);
    model.set_recompute(mode);
    Tensor tokens = Tensor::from_host(dev, {static_cast<std::int64_t>(f.tokens.size())}, f.tokens);
    Tensor targets = Tensor::from_host(dev, {static_cast<std::int64_t>(f.targets.size())}, f.targets);
    const std::size_t before = dev->memory_stats().current_bytes;
    dev->reset_peak();
    Tensor logits = model.forward(tokens, f.batch);
    Outcome out;
    out.saved_bytes = dev->memory_stats().current_bytes - before - logits.bytes();
    logits = Tensor();
    forward_backward(model, tokens, targets, f.batch, {.ce_scale = 0.05, .aux_scale = 1.0});
    out.peak_bytes = dev->memory_stats().peak_bytes - before;
    for (Parameter* p : params.all()) out.grads.push_back(p->grad.to_host());
    return out;
  };
  const Outcome none = run(Recompute::None);
  std::size_t saved_before = none.saved_bytes;
  for (Recompute mode : {Recompute::Moe, Recompute::Full}) {
    SCOPED_TRACE(recompute_name(mode));
    const Outcome r = run(mode);
    ASSERT_EQ(r.grads.size(), none.grads.size());
    for (std::size_t i = 0; i < r.grads.size(); ++i) {
      for (std::size_t j = 0; j < r.grads[i].size(); ++j)
        ASSERT_NEAR(r.grads[i][j], none.grads[i][j], 1e-6 * std::abs(none.grads[i][j]) + 1e-12) << "parameter " << i << " entry " << j;
    }
    EXPECT_LT(r.saved_bytes, saved_before);
    EXPECT_LE(r.peak_bytes, none.peak_bytes);
    saved_before = r.saved_bytes;
  }
}

TEST(Recompute, GeluWithCapacitySameGradientsLessMemory) { check_recompute(make_fixture(ExpertType::Gelu, 2, 1.0)); }
TEST(Recompute, SwiGluDroplessSameGradientsLessMemory) { check_recompute(make_fixture(ExpertType::SwiGlu, 1, 0.0)); }

TEST(ModelConfig, RejectsImpossibleShapesNamingTheKey) {
  ModelConfig c;
  c.d_model = 30;
  c.n_heads = 4;
  try {
    c.validate();
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.d_model"), std::string::npos) << e.what();
  }
  c = ModelConfig();
  c.router_score = RouterScore::Sigmoid;  // the z-loss needs softmax logits
  try {
    c.validate();
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("set model.z_loss_coef = 0"), std::string::npos) << e.what();
  }
  c = ModelConfig();
  c.top_k = 5;
  c.experts = 4;
  EXPECT_THROW(c.validate(), ConfigError);
}

}  // namespace moerun::test
