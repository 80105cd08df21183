// train.precision = bf16 under every layout: a distributed bf16 run gives the one-process bf16
// losses to bf16 tolerance (layouts change only fp32 summation orders, which can flip a bf16
// rounding of a weight copy or an activation); placement changes every 2 steps keep that
// true (exchange bytes: test_dispatcher.cpp); checkpoints hold the fp32 master weights, so a bf16 run resumes bit-identically in
// bf16 and its state loads unchanged into an fp32 run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>

#include "mpi_test_util.h"
#include "test_device.h"
#include "train/trainer.h"

namespace moerun::test {
namespace {

constexpr std::int64_t kSteps = 12;
// Per-step loss agreement between layouts in bf16. One bf16 rounding is 2^-8 relative; the
// loss averages many of them, so layouts agree far closer than that (measured on a Zen 4:
// at most 5.5e-5 relative over 12 steps at np 2 and 4, with and without rebalancing); fp32
// layouts agree to 1e-5 (mpi_test_util.h).
constexpr double kBf16LossRtol = 5e-4;
// Parameters: AdamW's early updates are about lr * sign(gradient), so a gradient near zero
// whose bf16 rounding differs between layouts moves a weight by up to 2 lr the other way
// (measured: at most 2.7e-3 with lr 3e-3). Two such flips are allowed.
constexpr double kBf16ParamAtol = 4 * 3e-3;

Config tiny(std::int64_t ep, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> sets = tiny_training_overrides();
  sets.insert(sets.end(), {"train.precision=\"bf16\"", "model.capacity_factor=0"});
  sets.insert(sets.end(), extra.begin(), extra.end());
  Config c = Config::load(std::nullopt, sets);
  c.train.steps = kSteps;
  c.parallel.ep = ep;
  return c;
}

struct Bf16Run {
  std::vector<double> losses;
  std::vector<std::int64_t> a2a_bytes;
  std::map<std::string, std::vector<float>> params;
  int placement_changes = 0;
};

Bf16Run train(const Config& c, ProcessGroup& group) {
  TestDevice dev;
  Trainer trainer(c, group, dev, "");
  Bf16Run r;
  for (std::int64_t step = 1; step <= c.train.steps; ++step) {
    const StepResult s = trainer.train_step(step);
    r.losses.push_back(s.loss);
    r.a2a_bytes.push_back(s.a2a_bytes);
    r.placement_changes += trainer.maybe_rebalance(step, s) ? 1 : 0;
  }
  for (Parameter* p : trainer.parameters().all()) r.params[p->name] = p->value.to_host();
  return r;
}

void expect_same_bf16_training(const Bf16Run& run, const Bf16Run& reference) {
  ASSERT_EQ(run.losses.size(), reference.losses.size());
  double worst_loss = 0.0;
  for (std::size_t s = 0; s < run.losses.size(); ++s) {
    EXPECT_NEAR(run.losses[s], reference.losses[s], kBf16LossRtol * std::abs(reference.losses[s])) << "step " << s + 1;
    worst_loss = std::max(worst_loss, std::abs(run.losses[s] - reference.losses[s]) / std::abs(reference.losses[s]));
  }
  double worst_param = 0.0;
  for (const auto& [name, values] : run.params) {
    ASSERT_TRUE(reference.params.contains(name)) << name;
    const auto& ref = reference.params.at(name);
    for (std::size_t i = 0; i < values.size(); ++i) worst_param = std::max(worst_param, double(std::abs(values[i] - ref[i])));
  }
  EXPECT_LE(worst_param, kBf16ParamAtol);
  std::printf("    bf16 layouts: worst loss difference %.2e relative, worst parameter difference %.2e\n", worst_loss,
              worst_param);
}

const Bf16Run& one_process_bf16() {
  static const Bf16Run r = [] {
    LocalGroup alone;
    return train(tiny(1), alone);
  }();
  return r;
}

}  // namespace

TEST(MixedPrecision, DistributedBf16GivesTheOneProcessBf16Losses) {
  auto w = world();
  const char* isa = std::getenv("ONEDNN_MAX_CPU_ISA");  // set by mixed_precision_emulated_np2
  if (isa != nullptr && std::string(isa) == "AVX2") {
    TestDevice dev;
    EXPECT_EQ(dev->dtype_path(DType::BF16).rfind("emulated", 0), 0u) << "rank " << w->rank() << " runs bf16 natively";
  }
  for (std::int64_t ep = 1; ep <= w->size(); ep *= 2) {
    if (w->size() % ep != 0) continue;
    SCOPED_TRACE(::testing::Message() << "world " << w->size() << ", ep " << ep);
    expect_same_bf16_training(train(tiny(ep), *w), one_process_bf16());
  }
}

// The adaptive planner moves and replicates experts every 2 steps (forced, skewed routing):
// weights, optimizer state and the bf16 compute copies move with them, the math does not.
TEST(MixedPrecision, RebalancingEveryTwoStepsKeepsTheBf16Math) {
  auto w = world();
  if (w->size() < 2) GTEST_SKIP() << "placement changes need parallel.ep > 1";
  const std::vector<std::string> skewed = {"model.experts=8", "bench.router_zipf=1.2", "balance.interval=2",
                                           "balance.threshold=0", "balance.force=true",
                                           fmt::format("balance.max_experts_per_rank={}", 8 / w->size() + 2)};
  LocalGroup alone;
  const Bf16Run reference = train(tiny(1, skewed), alone);
  for (const std::string policy : {"migrate", "replicate"}) {
    SCOPED_TRACE(::testing::Message() << "world " << w->size() << ", ep " << w->size() << ", " << policy);
    std::vector<std::string> sets = skewed;
    sets.push_back("balance.policy=\"" + policy + "\"");
    const Bf16Run run = train(tiny(w->size(), sets), *w);
    EXPECT_GE(run.placement_changes, 1);
    expect_same_bf16_training(run, reference);
  }
}

// parallel.grad_reduce_dtype = bf16: gradient buckets travel in bf16 (half the bytes) and sum
// in fp32; the training stays the one-process bf16 training to the same tolerance.
TEST(MixedPrecision, GradientsReducedInBf16HalveTheBytesAndKeepTheLosses) {
  auto w = world();
  if (w->size() < 2) GTEST_SKIP() << "no gradient reduction at one rank";
  const std::int64_t ep = w->size() / 2 >= 1 && w->size() % 2 == 0 ? 2 : 1;
  SCOPED_TRACE(::testing::Message() << "world " << w->size() << ", ep " << ep);
  Config fp32_wire = tiny(ep), bf16_wire = tiny(ep, {"parallel.grad_reduce_dtype=\"bf16\""});
  fp32_wire.train.steps = bf16_wire.train.steps = 1;
  TestDevice dev;
  Trainer a(fp32_wire, *w, dev, ""), b(bf16_wire, *w, dev, "");
  const StepResult sa = a.train_step(1), sb = b.train_step(1);
  EXPECT_GT(sa.allreduce_bytes_intra_node, 0);
  EXPECT_EQ(sb.allreduce_bytes_intra_node * 2, sa.allreduce_bytes_intra_node);
  expect_same_bf16_training(train(tiny(ep, {"parallel.grad_reduce_dtype=\"bf16\""}), *w), one_process_bf16());
}

// parallel.dispatch_dtype = fp8: every layout quantizes the same rows the same way (local rows
// too), so the distributed run is still the one-process run with fp8 dispatch.
TEST(MixedPrecision, Fp8DispatchIsLayoutIndependent) {
  auto w = world();
  const std::vector<std::string> fp8 = {"parallel.dispatch_dtype=\"fp8\"", "parallel.fp8_scale_block=16"};
  LocalGroup alone;
  const Bf16Run reference = train(tiny(1, fp8), alone);
  for (std::int64_t ep = 2; ep <= w->size(); ep *= 2) {
    SCOPED_TRACE(::testing::Message() << "world " << w->size() << ", ep " << ep << ", fp8 dispatch");
    expect_same_bf16_training(train(tiny(ep, fp8), *w), reference);
  }
}

// Same routing, half the bytes: checked where the routing is fixed, in test_dispatcher.cpp
// (AllToAllDispatcher.*RoundTrip sends the same rows in fp32 and bf16).

// A bf16 checkpoint holds fp32 masters: resuming in bf16 continues bit for bit (fixed thread
// count), and an fp32 run loads exactly the values the bf16 run had.
TEST(MixedPrecision, ResumesInBf16BitIdenticallyAndInFp32FromTheSameMasters) {
  auto w = world();
  const std::int64_t ep = w->size() % 2 == 0 ? 2 : 1;
  const std::string dir = shared_dir(*w, "bf16_resume");
  const Config c = tiny(ep);
  std::vector<double> straight, resumed;
  std::map<std::string, std::vector<float>> at_save, loaded_fp32;
  {
    TestDevice dev;
    Trainer t(c, *w, dev, dir);
    for (std::int64_t s = 1; s <= 4; ++s) t.train_step(s);
    t.save_checkpoint(4);
    for (Parameter* p : t.parameters().all()) at_save[p->name] = p->value.to_host();
    for (std::int64_t s = 5; s <= 8; ++s) straight.push_back(t.train_step(s).loss);
  }
  {
    TestDevice dev;
    Trainer t(c, *w, dev, dir + "_resumed");
    t.restore(dir);
    for (std::int64_t s = 5; s <= 8; ++s) resumed.push_back(t.train_step(s).loss);
  }
  EXPECT_EQ(straight, resumed);
  {
    Config f = c;
    f.model.compute_dtype = DType::F32;
    TestDevice dev;
    Trainer t(f, *w, dev, dir + "_fp32");
    t.restore(dir, {"train.precision"});
    for (Parameter* p : t.parameters().all()) {
      EXPECT_FALSE(p->compute_copy.defined()) << p->name;
      ASSERT_TRUE(at_save.contains(p->name)) << p->name;
      EXPECT_EQ(p->value.to_host(), at_save[p->name]) << p->name;
    }
    const double loss = t.train_step(5).loss;
    EXPECT_TRUE(std::isfinite(loss));
    EXPECT_NEAR(loss, straight[0], 0.05 * straight[0]) << "fp32 continues where bf16 left off";
  }
}

}  // namespace moerun::test
