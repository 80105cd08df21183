// The central promise of the parallel runtime: a distributed run computes the same training
// math as one process over the same global batch. Every rank runs the single-process
// reference itself (LocalGroup), then the distributed run for every ep that divides the world
// size, and compares per-step losses and its own parameters (dense and local experts, by name)
// after 20 steps, in dropless mode and with a capacity factor.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "checkpoint/routing_trace_file.h"
#include "runtime/error.h"
#include "expect_error.h"
#include "mpi_test_util.h"
#include "test_device.h"
#include "train/trainer.h"

namespace moerun::test {
namespace {

constexpr std::int64_t kSteps = 20;

Config tiny(double capacity_factor, std::int64_t ep, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> sets = tiny_training_overrides();
  sets.insert(sets.end(), extra.begin(), extra.end());
  Config c = Config::load(std::nullopt, sets);
  c.model.capacity_factor = capacity_factor;
  c.train.steps = kSteps;
  c.parallel.ep = ep;
  return c;
}

RunResult train(const Config& c, ProcessGroup& group) {
  TestDevice dev;
  Trainer trainer(c, group, dev, "");
  RunResult r;
  for (std::int64_t step = 1; step <= c.train.steps; ++step) r.losses.push_back(trainer.train_step(step).loss);
  for (Parameter* p : trainer.parameters().all()) r.params[p->name] = p->value.to_host();
  for (Buffer* b : trainer.parameters().buffers()) r.params[b->name] = b->value.to_host();
  return r;
}

void expect_same_training(double capacity_factor) {
  auto w = world();
  LocalGroup alone;
  const RunResult reference = train(tiny(capacity_factor, 1), alone);
  for (std::int64_t ep = 1; ep <= w->size(); ++ep) {
    if (w->size() % ep != 0) continue;
    SCOPED_TRACE(::testing::Message() << "world " << w->size() << ", ep " << ep << ", capacity " << capacity_factor);
    const RunResult run = train(tiny(capacity_factor, ep), *w);
    expect_same_training(run, reference);
    std::size_t experts_here = 0;
    for (const auto& [name, values] : run.params) experts_here += name.find(".experts.") != std::string::npos;
    // Each rank holds experts / ep experts (two matrices each, per MoE layer).
    EXPECT_EQ(experts_here, static_cast<std::size_t>(2 * 2 * 4 / ep));
  }
}

}  // namespace

TEST(ParallelTraining, SameAsOneProcessDropless) { expect_same_training(0.0); }

// ZeRO-1: gradients reduce-scattered, each rank updates its rows of every parameter (dense
// over the world, experts over their expert-data-parallel copies), parameters all-gathered.
// The same math as one process without sharding, for every ep; moments are really split.
TEST(ParallelTraining, ShardedOptimizerSameAsOneProcess) {
  auto w = world();
  LocalGroup alone;
  const RunResult reference = train(tiny(1.0, 1), alone);
  for (std::int64_t ep = 1; ep <= w->size(); ++ep) {
    if (w->size() % ep != 0) continue;
    SCOPED_TRACE(::testing::Message() << "world " << w->size() << ", ep " << ep << ", shard_optimizer");
    Config c = tiny(1.0, ep);
    c.train.shard_optimizer = true;
    expect_same_training(train(c, *w), reference);
    // Every row's moments live on exactly one rank per copy of the model: the world holds
    // 2 x the one-process parameter count, not (dp or world) times that.
    TestDevice dev;
    Trainer sharded(c, *w, dev, "");
    const std::int64_t world_state = w->all_reduce_value(sharded.optimizer().state_elements());
    Trainer one(tiny(1.0, 1), alone, dev, "");
    EXPECT_EQ(world_state, 2 * one.parameters().count_elements());
  }
}

// The hierarchical token exchange (two "nodes" of two ranks at world 4, one rank per node at
// world 2) routes rows through node leaders; the training math stays the one-process math.
TEST(ParallelTraining, HierarchicalAllToAllSameAsOneProcess) {
  auto w = world();
  LocalGroup alone;
  const RunResult reference = train(tiny(1.0, 1), alone);
  Config c = tiny(1.0, w->size());
  c.parallel.all_to_all = ExchangeRoute::Hierarchical;
  c.parallel.ranks_per_node = std::max(1, w->size() / 2);
  SCOPED_TRACE(::testing::Message() << "world " << w->size() << ", ep " << w->size() << ", hierarchical");
  expect_same_training(train(c, *w), reference);
}

// Recomputation under expert parallelism: full recompute runs each block's forward again in
// backward, token exchange included; the math must still be the one-process math (without
// recomputation).
TEST(ParallelTraining, RecomputeSameAsOneProcessWithout) {
  auto w = world();
  LocalGroup alone;
  const RunResult reference = train(tiny(1.0, 1), alone);
  for (const Recompute mode : {Recompute::Moe, Recompute::Full}) {
    SCOPED_TRACE(::testing::Message() << "world " << w->size() << ", ep " << w->size() << ", recompute "
                                      << recompute_name(mode));
    Config c = tiny(1.0, w->size());
    c.train.recompute = mode;
    expect_same_training(train(c, *w), reference);
  }
  // What a step reports from its device readout (balancing losses, routed copies, drops) counts
  // the forward once, although full recompute runs it twice.
  auto reported = [&](Recompute mode) {
    Config c = tiny(1.0, w->size());
    c.train.recompute = mode;
    TestDevice dev;
    Trainer trainer(c, *w, dev, "");
    std::vector<StepResult> out;
    for (std::int64_t step = 1; step <= c.train.steps; ++step) out.push_back(trainer.train_step(step));
    return out;
  };
  const std::vector<StepResult> once = reported(Recompute::None), twice = reported(Recompute::Full);
  ASSERT_EQ(once.size(), twice.size());
  for (std::size_t i = 0; i < once.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "step " << i + 1);
    EXPECT_GT(once[i].aux_loss, 0.0);
    EXPECT_NEAR(twice[i].aux_loss, once[i].aux_loss, 1e-6 * once[i].aux_loss);
    EXPECT_NEAR(twice[i].z_loss, once[i].z_loss, 1e-6 * once[i].z_loss);
    EXPECT_EQ(twice[i].expert_counts, once[i].expert_counts);
    EXPECT_EQ(twice[i].dropped_frac, once[i].dropped_frac);
  }
}
TEST(ParallelTraining, SameAsOneProcessWithCapacity) { expect_same_training(1.0); }

// Shared experts (dense parameters inside the MoE layer, on every token of every rank) and the
// Llama-style block (RMSNorm, RoPE): summed like any dense gradient, the one-process math.
TEST(ParallelTraining, SharedExpertsRmsNormRopeSameAsOneProcess) {
  auto w = world();
  auto with = [](Config c) {
    c.model.shared_experts = 2;
    c.model.shared_d_ff = 16;
    c.model.norm = NormKind::RmsNorm;
    c.model.position = PositionKind::Rope;
    return c;
  };
  LocalGroup alone;
  const RunResult reference = train(with(tiny(0.0, 1)), alone);
  SCOPED_TRACE(::testing::Message() << "world " << w->size() << ", ep " << w->size() << ", shared experts, rmsnorm, rope");
  expect_same_training(train(with(tiny(0.0, w->size())), *w), reference);
}

// The DeepSeek-MoE block: sigmoid scores, the aux-free bias moved from the world's counts each
// step (the same bias on every rank), the sequence-wise loss, a shared expert. The bias is
// compared with the one-process run's like a parameter.
TEST(ParallelTraining, DeepSeekBlockSameAsOneProcess) {
  auto w = world();
  LocalGroup alone;
  const RunResult reference = train(tiny(1.0, 1, deepseek_block_overrides()), alone);
  for (const char* name : {"layers.0.moe.router_bias", "layers.1.moe.router_bias"}) {
    ASSERT_TRUE(reference.params.contains(name)) << name;
    const auto& bias = reference.params.at(name);
    EXPECT_TRUE(std::any_of(bias.begin(), bias.end(), [](float b) { return b != 0.0f; })) << name << " never moved";
  }
  for (std::int64_t ep = 2; ep <= w->size(); ep *= 2) {
    SCOPED_TRACE(::testing::Message() << "world " << w->size() << ", ep " << ep << ", deepseek block");
    const RunResult run = train(tiny(1.0, ep, deepseek_block_overrides()), *w);
    EXPECT_TRUE(run.params.contains("layers.1.moe.router_bias"));
    expect_same_training(run, reference);
  }
}

// log.routing_trace: the counts each rank routed, summed over the ranks, are the one-process
// run's (the same math routes the same tokens); each rank routed its own tokens' k copies; and
// under bench.router_balanced every (rank, expert) cell holds exactly its share.
TEST(RoutingTrace, RanksSumToTheOneProcessCountsAndForcedBalanceIsExact) {
  auto w = world();
  const std::string dir = shared_dir(*w, "routing_trace");
  auto traced = [&](std::int64_t ep, bool balanced) {
    Config c = tiny(0.0, ep, {"log.routing_trace=true"});
    c.train.steps = 4;
    c.model.router_balanced = balanced;
    return c;
  };
  auto run = [&](const Config& c, ProcessGroup& group, const std::string& run_dir) {
    TestDevice dev;
    Trainer trainer(c, group, dev, run_dir);
    for (std::int64_t step = 1; step <= c.train.steps; ++step) trainer.train_step(step);
  };
  if (w->rank() == 0) {
    LocalGroup alone;
    run(traced(1, false), alone, dir + "/one");
  }
  run(traced(w->size(), false), *w, dir + "/world");
  run(traced(w->size(), true), *w, dir + "/balanced");
  if (w->rank() != 0) return;
  const auto one = ckpt::read_routing_trace(dir + "/one/routing/steps_1.h5");
  const auto all = ckpt::read_routing_trace(dir + "/world/routing/steps_1.h5");
  const auto& s = all.shape;
  ASSERT_EQ(s.ranks, w->size());
  ASSERT_EQ(all.step, (std::vector<std::int64_t>{1, 2, 3, 4}));
  ASSERT_EQ(one.routed.size() * std::size_t(s.ranks), all.routed.size());
  const std::int64_t copies_per_rank = s.tokens_per_step / s.ranks * s.top_k;
  std::int64_t differ = 0, total = 0;
  for (std::int64_t step = 0; step < 4; ++step)
    for (std::int64_t l = 0; l < s.layers; ++l) {
      for (std::int64_t r = 0; r < s.ranks; ++r) {
        std::int64_t sent = 0;
        for (std::int64_t e = 0; e < s.experts; ++e) sent += all.routed[std::size_t(((step * s.layers + l) * s.ranks + r) * s.experts + e)];
        EXPECT_EQ(sent, copies_per_rank) << "step " << step << " layer " << l << " rank " << r;
      }
      for (std::int64_t e = 0; e < s.experts; ++e) {
        std::int64_t sum = 0;
        for (std::int64_t r = 0; r < s.ranks; ++r) sum += all.routed[std::size_t(((step * s.layers + l) * s.ranks + r) * s.experts + e)];
        const std::int64_t expected = one.routed[std::size_t((step * s.layers + l) * s.experts + e)];
        differ += std::abs(sum - expected);
        total += expected;
        EXPECT_EQ(all.kept[std::size_t((step * s.layers + l) * s.experts + e)], sum) << "dropless: kept = routed";
      }
    }
  // Router near-ties may round the other way with another batch split (a copy or two).
  EXPECT_LE(differ, total / 200) << differ << " of " << total << " copies routed differently";
  const auto balanced = ckpt::read_routing_trace(dir + "/balanced/routing/steps_1.h5");
  for (const std::int64_t count : balanced.routed) EXPECT_EQ(count, copies_per_rank / s.experts);
  // Unreadable traces name the file and what it is not.
  expect_error<CheckpointError>([&] { ckpt::read_routing_trace(dir + "/none.h5"); }, "does not exist");
  expect_error<CheckpointError>([&] { ckpt::read_routing_trace(dir + "/one/config.json"); }, "is not an HDF5 file");
}

}  // namespace moerun::test
