// The training loop on one process: loss falls, two runs are bit-identical, NaN stops the run
// with the offending parameter named.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "parallel/process_group.h"
#include "runtime/error.h"
#include "expect_error.h"
#include "test_device.h"
#include "train/trainer.h"

namespace moerun::test {
namespace {

Config tiny_config(std::int64_t steps) {
  Config c = Config::load(std::nullopt, {"model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.seq_len=32",
                                         "train.global_batch=8", "train.micro_batch=4", "eval.every=0",
                                         "eval.examples=4", "eval.heldout_batches=1", "train.warmup_steps=2"});
  c.train.steps = steps;
  return c;
}

std::vector<float> all_values(ParameterStore& params) {
  std::vector<float> out;
  for (Parameter* p : params.all()) {
    const auto v = p->value.to_host();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

}  // namespace

TEST(Trainer, LossFallsOnSyntheticTasks) {
  const Config c = tiny_config(80);
  LocalGroup world;
  TestDevice dev;
  Trainer trainer(c, world, dev, "");
  const TrainSummary s = trainer.run();
  ASSERT_EQ(s.losses.size(), 80u);
  EXPECT_LT(s.losses.back(), 0.6 * s.losses.front()) << "first " << s.losses.front() << " last " << s.losses.back();
  EXPECT_GT(s.final_eval.heldout_targets, 0);
  EXPECT_EQ(s.final_eval.tasks.size(), 4u);
}

// Any vocabulary a token file needs: ids up to 4999 in a u16 file, model.vocab_size = 5000.
// The sequence is predictable (a cycle: each id follows from the previous), so the loss must
// fall well below log(5000); the embedding is [5000, d]; too small a vocabulary, or a byte vocabulary
// below 259 for the synthetic tasks, is refused by name.
TEST(Trainer, TrainsOnATokenFileWithItsOwnVocabulary) {
  const std::string path = (std::filesystem::temp_directory_path() / "moerun_vocab5000.u16").string();
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 20000; ++i) {  // a cycle through 50 ids spread over [0, 5000), 4999 included
      const auto id = static_cast<std::uint16_t>(i % 50 == 49 ? 4999 : ((i % 50) * 37 % 50) * 100 + 7);
      out.write(reinterpret_cast<const char*>(&id), sizeof(id));
    }
  }
  Config c = tiny_config(60);
  c.data.source = path;
  c.model.vocab_size = 5000;
  c.eval.examples = 0;
  c.train.lr = 1e-2;
  LocalGroup world;
  TestDevice dev;
  Trainer trainer(c, world, dev, "");
  EXPECT_EQ(trainer.parameters().get("embedding.tokens").value.shape(), (Shape{5000, 32}));
  const TrainSummary s = trainer.run();
  EXPECT_NEAR(s.losses.front(), std::log(5000.0), 0.5);
  EXPECT_LT(s.losses.back(), 0.5 * s.losses.front()) << "first " << s.losses.front() << " last " << s.losses.back();
  Config small = c;
  small.model.vocab_size = 4000;
  expect_error<DataError>([&] { Trainer t(small, world, dev, ""); },
                          {"outside the vocabulary [0, 4000)", "byte offset", "model.vocab_size above"});
  Config bytes = tiny_config(1);
  bytes.model.vocab_size = 100;
  expect_error<ConfigError>([&] { Trainer t(bytes, world, dev, ""); },
                            {"model.vocab_size = 100 is smaller than the byte vocabulary (259", "data.source = \"synthetic\""});
  std::filesystem::remove(path);
}

TEST(Trainer, TwoRunsAreBitIdentical) {
  const Config c = tiny_config(5);
  LocalGroup world;
  std::vector<double> losses[2];
  std::vector<float> values[2];
  for (int run = 0; run < 2; ++run) {
    TestDevice dev;
    Trainer trainer(c, world, dev, "");
    for (std::int64_t step = 1; step <= c.train.steps; ++step) losses[run].push_back(trainer.train_step(step).loss);
    values[run] = all_values(trainer.parameters());
  }
  EXPECT_EQ(losses[0], losses[1]);
  ASSERT_EQ(values[0].size(), values[1].size());
  EXPECT_EQ(std::memcmp(values[0].data(), values[1].data(), values[0].size() * sizeof(float)), 0);
}

// A step reports its passes (start through gradient sync: what the planner's realized share is
// measured on) as a part of its time, the update after them excluded.
TEST(Trainer, AStepReportsItsPassesAsPartOfItsTime) {
  const Config c = tiny_config(2);
  LocalGroup world;
  TestDevice dev;
  Trainer trainer(c, world, dev, "");
  for (std::int64_t step = 1; step <= c.train.steps; ++step) {
    const StepResult r = trainer.train_step(step);
    EXPECT_GT(r.passes_ms, 0.0) << "step " << step;
    EXPECT_LT(r.passes_ms, r.step_ms) << "step " << step << ": the update comes after the passes";
  }
}

TEST(Trainer, GradientAccumulationMatchesOneBigMicroBatchInDroplessMode) {
  // Dropless routing makes the math independent of how the batch is cut into micro-batches
  // (capacity, being per micro-batch, would not be), so 8 = 2 x 4 = 1 x 8 sequences agree.
  Config a = tiny_config(3), b = tiny_config(3);
  a.model.capacity_factor = b.model.capacity_factor = 0.0;
  a.model.aux_loss_coef = b.model.aux_loss_coef = 0.0;  // the aux loss is a mean over micro-batches
  a.model.z_loss_coef = b.model.z_loss_coef = 0.0;
  b.train.micro_batch = 8;
  LocalGroup world;
  TestDevice dev_a, dev_b;
  Trainer ta(a, world, dev_a, ""), tb(b, world, dev_b, "");
  for (std::int64_t step = 1; step <= 3; ++step) {
    const double la = ta.train_step(step).loss, lb = tb.train_step(step).loss;
    EXPECT_NEAR(la, lb, 1e-5 * std::abs(lb)) << "step " << step;
  }
  const auto va = all_values(ta.parameters()), vb = all_values(tb.parameters());
  for (std::size_t i = 0; i < va.size(); ++i) ASSERT_NEAR(va[i], vb[i], 1e-5 + 1e-4 * std::abs(vb[i])) << i;
}

TEST(Trainer, NanStopsTheRunNamingStepAndParameter) {
  const Config c = tiny_config(3);
  LocalGroup world;
  TestDevice dev;
  Trainer trainer(c, world, dev, "");
  trainer.train_step(1);
  trainer.parameters().get("layers.1.moe.router").value.fill(NAN);
  try {
    trainer.train_step(2);
    FAIL() << "expected the NaN guard to stop training";
  } catch (const RuntimeError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("step 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("nan"), std::string::npos) << msg;
    // The first parameter, in registry order, whose gradient is not finite.
    EXPECT_NE(msg.find("gradient of 'embedding.tokens'"), std::string::npos) << msg;
  }
}

}  // namespace moerun::test

namespace moerun::test {

// The loss-spike guard: a step whose loss jumps past train.max_loss_ratio times the recent
// median is not applied: stop ends the run naming the step and both losses, skip drops the
// update and goes on. The spike is made by blowing up the (tied) embedding after 6 steps.
TEST(Trainer, LossSpikeStopsOrSkipsTheUpdate) {
  for (const LossSpikeAction action : {LossSpikeAction::Stop, LossSpikeAction::Skip}) {
    Config c = tiny_config(10);
    c.train.max_loss_ratio = 1.5;
    c.train.loss_spike = action;
    LocalGroup world;
    TestDevice dev;
    Trainer trainer(c, world, dev, "");
    for (std::int64_t s = 1; s <= 6; ++s) EXPECT_FALSE(trainer.train_step(s).update_skipped) << "step " << s;
    Tensor& embedding = trainer.parameters().get("embedding.tokens").value;
    std::vector<float> v = embedding.to_host();
    for (float& x : v) x *= 30.0f;
    embedding.copy_from_host(v);
    const std::vector<float> before = all_values(trainer.parameters());
    if (action == LossSpikeAction::Stop) {
      expect_error<RuntimeError>([&] { trainer.train_step(7); }, {"[loss guard] step 7", "times the median", "train.max_loss_ratio = 1.5"});
    } else {
      EXPECT_TRUE(trainer.train_step(7).update_skipped);
    }
    EXPECT_EQ(all_values(trainer.parameters()), before) << "the spiking step changed the parameters";
  }
}

}  // namespace moerun::test
