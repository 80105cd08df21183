// Generation: the sampler's cuts and its seeded determinism, draws that follow softmax(logits / T),
// and the generator's sliding context window.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "expect_error.h"
#include "infer/generator.h"
#include "infer/sampler.h"
#include "infer/text_codec.h"
#include "runtime/error.h"
#include "runtime/vocab.h"
#include "test_device.h"

namespace moerun::test {

TEST(Sampler, GreedyAndCutsPickTheMostLikely) {
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f, 0.5f};
  Sampler greedy({.temperature = 0.0});
  EXPECT_EQ(greedy.next(logits), 1);
  Sampler top1({.temperature = 1.0, .top_k = 1});
  Sampler tiny_nucleus({.temperature = 1.0, .top_p = 1e-6});
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(top1.next(logits), 1);
    EXPECT_EQ(tiny_nucleus.next(logits), 1);
  }
  Sampler top2({.temperature = 5.0, .top_k = 2, .seed = 9});  // hot: both kept tokens appear, nothing else
  std::map<std::int32_t, int> seen;
  for (int i = 0; i < 200; ++i) ++seen[top2.next(logits)];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen.contains(1) && seen.contains(3));
}

// At temperature T the draws follow softmax(logits / T): frequencies over 40000 draws within
// 4 standard deviations of the probabilities; the same seed gives the same draws.
TEST(Sampler, FollowsTheSoftmaxAtTheTemperatureAndIsSeeded) {
  const std::vector<float> logits = {1.0f, 0.0f, 2.0f, -0.5f};
  const double temperature = 1.5;
  const int draws = 40000;
  Sampler sampler({.temperature = temperature, .seed = 5});
  std::vector<int> counts(logits.size(), 0);
  std::vector<std::int32_t> first;
  for (int i = 0; i < draws; ++i) {
    const std::int32_t id = sampler.next(logits);
    ++counts[static_cast<std::size_t>(id)];
    if (i < 50) first.push_back(id);
  }
  double z = 0.0;
  for (float l : logits) z += std::exp(l / temperature);
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const double p = std::exp(logits[i] / temperature) / z, sd = std::sqrt(p * (1 - p) / draws);
    EXPECT_NEAR(double(counts[i]) / draws, p, 4 * sd) << "token " << i;
  }
  Sampler again({.temperature = temperature, .seed = 5});
  for (std::int32_t id : first) EXPECT_EQ(again.next(logits), id);
}

TEST(Sampler, BadOptionsNameTheOption) {
  expect_error<ConfigError>([] { Sampler({.temperature = -1.0}); }, "--temperature");
  expect_error<ConfigError>([] { Sampler({.top_k = -2}); }, "--top-k");
  expect_error<ConfigError>([] { Sampler({.top_p = 0.0}); }, "--top-p");
}

TEST(ByteCodec, RoundTripSkipsSpecialTokens) {
  const auto codec = make_byte_codec();
  const std::string text = "moerun \xc3\xa9 \n";
  std::vector<std::int32_t> ids = codec->encode(text);
  EXPECT_EQ(ids.size(), text.size());
  ids.push_back(vocab::kEos);
  EXPECT_EQ(codec->decode(ids), text);
  EXPECT_EQ(codec->end_of_text(), vocab::kEos);
}

// Past the context the window slides (a re-prefill of its last half) and generation goes on;
// the prompt may not exceed the context.
TEST(Generator, SlidesTheWindowAndRefusesLongPrompts) {
  ModelConfig config;
  config.d_model = 16;
  config.n_heads = 2;
  config.n_layers = 2;
  config.seq_len = 8;
  config.experts = 4;
  config.capacity_factor = 0.0;
  config.validate();
  TestDevice dev;
  ParameterStore params(dev, 1, config.init_std);
  LocalTokenDispatcher dispatcher(static_cast<int>(config.experts));
  Transformer model(config, params, dispatcher);
  Generator generator(model, dev);
  Sampler sampler({.temperature = 1.0, .seed = 3});
  const auto out = generator.generate({1, 2, 3}, 20, sampler, std::nullopt);
  EXPECT_EQ(out.size(), 20u);
  EXPECT_GE(generator.stats().prefills, 3);  // 3 + 20 tokens through a window of 8
  Sampler same({.temperature = 1.0, .seed = 3});
  EXPECT_EQ(generator.generate({1, 2, 3}, 20, same, std::nullopt), out);
  expect_error<ConfigError>([&] { generator.generate(std::vector<std::int32_t>(9, 1), 1, sampler, std::nullopt); },
                            {"longer than the model's context model.seq_len = 8", "shorten"});
}

}  // namespace moerun::test
