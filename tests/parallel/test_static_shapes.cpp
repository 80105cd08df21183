// moe.shapes = static: every per-step device shape is a function of the config, in both static
// modes: capacity (fixed expert slots) and blockwise dropless (moe.block_size).
// (1) It does the same math as dynamic shapes: the same drops on every step, and losses and
//     parameters equal to dynamic shapes and to the one-process reference (rtol 1e-5; not
//     bit-identical: the expert GEMMs sum over padded row blocks), while the placement moves,
//     replicates and scrambles experts every 2 steps.
// (2) On the strict backend (the CTest variants *_strict_*): training with rebalancing, a
//     checkpoint and a resume runs no kernel with a new shape after the first step (the
//     trainer declares static shapes, the strict device throws on any new one), and the same
//     dynamic run is caught recompiling, so that the check is not vacuous.
// (3) Bad input: static shapes without a capacity, a placement over the configured slots.
#include <gtest/gtest.h>

#include <filesystem>

#include "expect_error.h"
#include "mpi_test_util.h"
#include "scripted_placements.h"
#include "runtime/device_registry.h"
#include "runtime/error.h"
#include "test_device.h"
#include "train/trainer.h"

namespace moerun::test {
namespace {

enum class Mode { Capacity, Blockwise };
const char* name(Mode m) { return m == Mode::Capacity ? "capacity" : "blockwise"; }

// Blockwise: 64 tokens x top-2 per micro-batch in blocks of 16 rows.
Config tiny(std::int64_t ep, const std::string& shapes, const std::string& policy = "none", Mode mode = Mode::Capacity) {
  std::vector<std::string> sets = tiny_training_overrides();
  sets.insert(sets.end(), {"model.experts=8", "bench.router_zipf=1.2", "balance.interval=2",
                           "balance.threshold=0", "balance.force=true", "balance.max_experts_per_rank=6"});
  sets.push_back(mode == Mode::Capacity ? "model.capacity_factor=1.0" : "model.capacity_factor=0");
  // Dropless routing leaves some expert weights with gradients near zero, where Adam's
  // m / (sqrt(v) + eps) turns summation-order noise into a full-size step (seen with the default
  // eps: 2.7e-6 on one element in 4096, dynamic and static shapes alike). A larger eps keeps
  // such steps small without changing the math under test.
  sets.push_back("train.epsilon=1e-6");
  if (mode == Mode::Blockwise && shapes == "static") sets.push_back("moe.block_size=16");
  sets.push_back("moe.shapes=\"" + shapes + "\"");
  sets.push_back("balance.policy=\"" + policy + "\"");
  Config c = Config::load(std::nullopt, sets);
  c.train.steps = 10;
  c.parallel.ep = ep;
  return c;
}

struct ShapedRun : RunResult {
  std::vector<double> dropped;
  std::vector<std::int64_t> host_reads;  // per step
  int changes = 0;
};

ShapedRun train(const Config& c, ProcessGroup& group, Device& dev, bool force_placements) {
  Trainer trainer(c, group, dev, "");
  ShapedRun r;
  for (std::int64_t step = 1; step <= c.train.steps; ++step) {
    const StepResult s = trainer.train_step(step);
    r.losses.push_back(s.loss);
    r.dropped.push_back(s.dropped_frac);
    r.host_reads.push_back(s.device_transfers.host_reads);
    if (force_placements && c.parallel.ep > 1) {
      if (auto p = scripted_placements(step, trainer.placements(), static_cast<int>(c.parallel.ep))) {
        trainer.apply_placements(*p);
        ++r.changes;
      }
    } else {
      r.changes += trainer.maybe_rebalance(step, s) ? 1 : 0;
    }
  }
  for (Parameter* p : trainer.parameters().all()) r.params[p->name] = p->value.to_host();
  return r;
}

}  // namespace

TEST(StaticShapes, BothModesDropTheSameCopiesAndDoTheSameMath) {
  auto w = world();
  for (const Mode mode : {Mode::Capacity, Mode::Blockwise}) {
    LocalGroup alone;
    TestDevice ref_dev;
    const ShapedRun reference = train(tiny(1, "dynamic", "none", mode), alone, ref_dev, false);
    for (std::int64_t ep = 1; ep <= w->size(); ep *= 2) {
      if (w->size() % ep != 0) continue;
      for (const bool force : {true, false}) {
        if (ep == 1 && !force) continue;
        SCOPED_TRACE(::testing::Message() << name(mode) << ", world " << w->size() << ", ep " << ep
                                          << (force ? ", forced placements" : ", planner (auto)"));
        const std::string policy = force ? "none" : "auto";
        TestDevice dyn_dev, static_dev;
        const ShapedRun dynamic = train(tiny(ep, "dynamic", policy, mode), *w, dyn_dev, force);
        const ShapedRun fixed = train(tiny(ep, "static", policy, mode), *w, static_dev, force);
        if (ep > 1) {
          EXPECT_GE(fixed.changes, 1) << "no placement change: the test would prove nothing";
        }
        // Capacity is per source micro-batch, so drops do not depend on the placement either.
        EXPECT_EQ(fixed.dropped, dynamic.dropped) << "static shapes must drop exactly the copies dynamic shapes drop";
        const double most = *std::max_element(fixed.dropped.begin(), fixed.dropped.end());
        if (mode == Mode::Capacity) {
          EXPECT_GT(most, 0.0) << "capacity never cut: vacuous";
        } else {
          EXPECT_EQ(most, 0.0) << "blockwise is dropless";
        }
        expect_same_training(fixed, reference);
        // Static shapes keep routing, capacity and counts on the device: the step's one read is
        // the readout (losses, counts, gradient norm). Dynamic shapes read the kept counts of
        // every MoE layer and micro-batch besides, to size the exchange.
        EXPECT_EQ(fixed.host_reads, std::vector<std::int64_t>(fixed.host_reads.size(), 1));
        for (const std::int64_t reads : dynamic.host_reads) EXPECT_GT(reads, 1);
        // The planner decides from measured times, so its two runs may hold different experts;
        // forced placements are the same in both, and so must be everything they hold.
        if (force) expect_same_training(fixed, dynamic);
      }
    }
  }
}

// The worst-case block count is the formula (the layout itself: test_dispatch_layout).
TEST(StaticShapes, WorstCaseBlockCount) {
  LocalTokenDispatcher one(8);
  // 64 tokens x 2 = 128 copies, 8 experts, blocks of 16: ceil((128 - 7) / 16) + 7 = 15.
  EXPECT_EQ(one.worst_case_blocks(128, 16), 15);
  EXPECT_EQ(one.worst_case_blocks(5, 16), 5);  // fewer copies than partial blocks: one each
}

// Under MOERUN_TEST_DEVICE=strict this is the promise a compiled accelerator needs: the
// trainer declared static shapes, so any kernel with a new shape after step 1 throws.
TEST(StaticShapes, NoNewKernelShapeAfterTheFirstStepThroughRebalancingAndResume) {
  auto w = world();
  const std::int64_t ep = w->size() >= 2 ? 2 : 1;
  for (const Mode mode : {Mode::Capacity, Mode::Blockwise}) {
    SCOPED_TRACE(name(mode));
    const std::string dir = shared_dir(*w, std::string("static_shapes_") + name(mode));
    Config c = tiny(ep, "static", "none", mode);
    c.train.steps = 8;
    std::int64_t shapes_after_first = 0;
    {
      TestDevice dev;
      Trainer trainer(c, *w, dev, dir);
      int changes = 0;
      for (std::int64_t step = 1; step <= 6; ++step) {
        trainer.train_step(step);
        if (step == 1) shapes_after_first = dev->shape_signatures();
        if (ep > 1) {
          if (auto p = scripted_placements(step, trainer.placements(), static_cast<int>(ep))) {
            trainer.apply_placements(*p);
            ++changes;
          }
        }
      }
      EXPECT_EQ(ep > 1 ? 3 : 0, changes);
      trainer.save_checkpoint(6);
    }
    if (test_device_name() == "strict") {
      EXPECT_GT(shapes_after_first, 0) << "the strict device recorded no shape";
    }
    TestDevice dev;
    Trainer resumed(c, *w, dev, dir);
    resumed.restore(dir);
    for (std::int64_t step = 7; step <= 8; ++step) EXPECT_TRUE(std::isfinite(resumed.train_step(step).loss));
    w->barrier();
    if (w->rank() == 0) std::filesystem::remove_all(dir);
  }
}

// The check above is not vacuous: the same training with dynamic shapes, on a strict device
// told to expect static shapes, is caught at a new shape within a few steps (one process).
TEST(StaticShapes, DynamicShapesAreCaughtRecompilingOnTheStrictDevice) {
  LocalGroup alone;
  auto dev = make_device("strict");
  Config c = tiny(1, "dynamic");
  Trainer trainer(c, alone, *dev, "");
  dev->expect_static_shapes(1);
  expect_error<DeviceError>(
      [&] {
        for (std::int64_t step = 1; step <= c.train.steps; ++step) trainer.train_step(step);
      },
      {"new kernel shape after warm-up", "would recompile"});
}

TEST(StaticShapes, BadInputNamesTheKeysAndNumbers) {
  auto load = [](std::vector<std::string> sets) { Config::load(std::nullopt, sets).validate(1); };
  expect_error<ConfigError>([&] { load({"moe.shapes=\"static\"", "model.capacity_factor=0"}); },
                            {"moe.shapes = static", "model.capacity_factor = 0", "moe.block_size > 0"});
  expect_error<ConfigError>([&] { load({"moe.shapes=\"static\"", "model.capacity_factor=0", "moe.block_size=-4"}); },
                            {"moe.block_size = -4", "positive"});
  expect_error<ConfigError>([&] { load({"moe.shapes=\"static\"", "model.capacity_factor=1.0", "moe.block_size=16"}); },
                            {"moe.block_size = 16", "model.capacity_factor = 0"});
  expect_error<ConfigError>(
      [&] {
        load({"moe.shapes=\"static\"", "model.capacity_factor=0", "moe.block_size=100000", "train.micro_batch=2",
              "model.seq_len=32"});
      },
      {"moe.block_size = 100000", "64 tokens of a micro-batch", "choose at most 64"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"moe.shapes=\"fixed\""}); }, {"moe.shapes", "static"});
  auto w = world();
  if (w->size() < 2) return;
  // Three experts on rank 0 where static shapes have two slots per rank (4 experts over ep 2).
  Config c = Config::load(std::nullopt, tiny_training_overrides());
  c.model.shapes = MoeShapes::Static;
  c.parallel.ep = 2;
  TestDevice dev;
  Trainer trainer(c, *w, dev, "");
  std::vector<std::vector<Replica>> reps = {{{0, 1}}, {{0, 1}}, {{0, 1}}, {{1, 1}}};
  trainer.apply_placements(std::vector<Placement>(trainer.placements().size(), Placement(2, reps)));
  expect_error<ConfigError>([&] { trainer.train_step(1); },
                            {"3 experts on ep rank 0", "2 expert slots per rank", "balance.max_experts_per_rank"});
}

}  // namespace moerun::test
