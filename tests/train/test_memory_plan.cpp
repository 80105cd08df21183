// The memory planner against what the code allocates: parameter bytes exactly, the peak of a few
// training steps within 10% for several model shapes, and the memory limit refusing a layout
// before anything is allocated, with options that fit.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "parallel/process_group.h"
#include "runtime/error.h"
#include "test_device.h"
#include "train/memory_plan.h"
#include "train/trainer.h"

namespace moerun::test {
namespace {

Config config_with(std::vector<std::string> overrides) {
  std::vector<std::string> all = {"model.d_model=64", "model.n_heads=4", "model.d_ff=256", "model.seq_len=32",
                                  "model.experts=4", "train.global_batch=16", "train.micro_batch=8",
                                  "eval.every=0", "eval.examples=2", "eval.heldout_batches=1"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return Config::load(std::nullopt, all);
}

struct Shape {
  const char* name;
  std::vector<std::string> overrides;
};

const std::vector<Shape> kShapes = {
    {"gelu_capacity", {}},
    {"swiglu_dropless_untied", {"model.expert_type=\"swiglu\"", "model.capacity_factor=0", "model.tie_embeddings=false"}},
    {"dense_every_2_top1", {"model.dense_every=2", "model.n_layers=4", "model.top_k=1"}},
    {"long_sequences_8_experts", {"model.seq_len=128", "model.experts=8", "train.micro_batch=4"}},
    {"recompute_moe", {"train.recompute=\"moe\""}},
    {"recompute_full", {"train.recompute=\"full\"", "model.n_layers=4"}},
    {"swiglu_recompute_full", {"model.expert_type=\"swiglu\"", "train.recompute=\"full\""}},
    {"bf16_gelu_capacity", {"train.precision=\"bf16\""}},
    {"bf16_swiglu_dropless_untied",
     {"train.precision=\"bf16\"", "model.expert_type=\"swiglu\"", "model.capacity_factor=0", "model.tie_embeddings=false"}},
    {"bf16_recompute_moe", {"train.precision=\"bf16\"", "train.recompute=\"moe\""}},
    {"two_shared_experts", {"model.shared_experts=2", "model.shared_d_ff=128", "model.top_k=1"}},
    {"rmsnorm_rope_swiglu_untied",
     {"model.norm=\"rmsnorm\"", "model.position=\"rope\"", "model.expert_type=\"swiglu\"", "model.tie_embeddings=false"}},
};

}  // namespace

TEST(MemoryPlan, ParameterBytesAreExact) {
  for (const Shape& s : kShapes) {
    const Config c = config_with(s.overrides);
    LocalGroup world;
    TestDevice dev;
    Trainer trainer(c, world, dev, "");
    const MemoryEstimate est = estimate_memory(c, 1, false);
    EXPECT_EQ(est.parameters, trainer.parameters().count_elements() * 4) << s.name;
    EXPECT_EQ(est.compute_copies, trainer.parameters().compute_copy_bytes()) << s.name;
    EXPECT_EQ(est.optimizer, 2 * est.parameters) << s.name;
  }
}

TEST(MemoryPlan, PeakOfTrainingStepsIsWithinTenPercent) {
  for (const Shape& s : kShapes) {
    const Config c = config_with(s.overrides);
    LocalGroup world;
    TestDevice dev;
    {
      Trainer trainer(c, world, dev, "");
      for (std::int64_t step = 1; step <= 3; ++step) trainer.train_step(step);
    }
    const double measured = double(dev->memory_stats().peak_bytes);
    const double estimated = double(estimate_memory(c, 1, false).peak);
    EXPECT_NEAR(estimated / measured, 1.0, 0.10) << s.name << ": estimated " << estimated << " measured " << measured;
  }
}

TEST(MemoryPlan, ActivationsGrowWithTheMicroBatchAndPersistentStateDoesNot) {
  const MemoryEstimate small = estimate_memory(config_with({"train.micro_batch=4"}), 1, false);
  const MemoryEstimate big = estimate_memory(config_with({"train.micro_batch=8"}), 1, false);
  EXPECT_EQ(small.persistent(), big.persistent());
  EXPECT_NEAR(double(big.activations) / double(small.activations), 2.0, 0.01);
}

// Recomputation shrinks what forward keeps, in the order none > moe > full, and the planner
// lists all three; ZeRO-1 divides the dense moments by the world and the experts' by dp.
TEST(MemoryPlan, RecomputeAndShardingTerms) {
  const MemoryEstimate none = estimate_memory(config_with({}), 4, false);
  EXPECT_GT(none.activations_with[0], none.activations_with[1]);
  EXPECT_GT(none.activations_with[1], none.activations_with[2]);
  EXPECT_EQ(none.activations + none.temporaries, none.activations_with[0]);
  const MemoryEstimate full = estimate_memory(config_with({"train.recompute=\"full\""}), 4, false);
  EXPECT_EQ(full.activations + full.temporaries, full.activations_with[2]);
  EXPECT_EQ(full.persistent(), none.persistent());
  const MemoryEstimate sharded = estimate_memory(config_with({"parallel.ep=2", "train.shard_optimizer=true"}), 4, false);
  const MemoryEstimate unsharded = estimate_memory(config_with({"parallel.ep=2"}), 4, false);
  EXPECT_EQ(sharded.parameters, unsharded.parameters);
  EXPECT_LT(sharded.optimizer, unsharded.optimizer);
  EXPECT_GT(sharded.optimizer, unsharded.optimizer / 4);  // experts split over dp = 2 only
  // ep = 1: every parameter has 4 data-parallel copies, so a quarter of the moments each.
  const MemoryEstimate dp4 = estimate_memory(config_with({"train.shard_optimizer=true"}), 4, false);
  EXPECT_NEAR(double(dp4.optimizer), double(none.optimizer) / 4.0, 16.0);
}

TEST(MemoryPlan, StagedCommunicationIsCounted) {
  const Config c = config_with({});
  EXPECT_EQ(estimate_memory(c, 1, false).communication, 0);
  EXPECT_GT(estimate_memory(c, 1, true).communication, 0);
}

TEST(MemoryPlan, LimitRefusesTheLayoutBeforeAllocatingAndNamesOptions) {
  Config c = config_with({});
  const MemoryEstimate est = estimate_memory(c, 1, false);
  c.runtime.memory_limit = std::to_string(est.peak / 2);
  LocalGroup world;
  TestDevice dev;
  expect_error<ConfigError>([&] { Trainer trainer(c, world, dev, ""); },
                            {"exceeds runtime.memory_limit", "parameters", "Options:", "--set train.micro_batch=",
                             "--set train.recompute=full"});
  EXPECT_EQ(dev->memory_stats().peak_bytes, 0u) << "something was allocated before the refusal";
  c.runtime.memory_limit = std::to_string(est.peak + 1);
  EXPECT_EQ(checked_memory_estimate(c, 1, false).peak, est.peak);
}

TEST(MemoryPlan, LimitSyntax) {
  EXPECT_EQ(parse_memory_limit("0"), 0);
  EXPECT_EQ(parse_memory_limit("1024"), 1024);
  EXPECT_EQ(parse_memory_limit("2KiB"), 2048);
  EXPECT_EQ(parse_memory_limit("1.5 GiB"), 1536LL * 1024 * 1024);
  EXPECT_GT(parse_memory_limit("50%"), 0);
  expect_error<ConfigError>([] { parse_memory_limit("lots"); }, "is not a size");
  expect_error<ConfigError>([] { parse_memory_limit("3 parsecs"); }, "unknown unit");
  Config c = config_with({});
  c.runtime.memory_limit = "12 furlongs";
  expect_error<ConfigError>([&] { c.validate(1); }, "runtime.memory_limit");
}

}  // namespace moerun::test
