// The step simulator (sim/): hardware files, the rate tables, the step-time model against
// hand-derived figures on a hardware whose rates make every term exact, routing sources
// (synthetic and replayed traces), and the simulation loop with the runtime's planner.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "checkpoint/routing_trace_file.h"
#include "runtime/error.h"
#include "sim/hardware.h"
#include "sim/routing_source.h"
#include "sim/simulator.h"
#include "sim/step_model.h"
#include "train/config.h"

namespace moerun::test {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir() {
  const fs::path d = fs::temp_directory_path() / fmt::format("moerun_sim_test_{}", ::getpid());
  fs::create_directories(d);
  return d;
}

// Rates that make every term easy to derive: GEMMs at exactly 1 TFLOP/s on any shape, memory
// traffic and kernel calls free, links of 1 GB/s with 10 us latency, nothing hidden.
sim::Hardware exact_hardware() {
  sim::Hardware hw;
  hw.name = "exact";
  hw.source = "specification";
  hw.ranks_per_node = 2;
  hw.kernel_overhead_us = 0.0;
  hw.elementwise_gbps = hw.optimizer_gbps = 1e12;
  for (sim::PeakRate* p : {&hw.gemm_peak_f32, &hw.gemm_peak_bf16, &hw.attention_peak_f32, &hw.attention_peak_bf16})
    *p = {.tflops = 1.0, .efficiency = 1.0, .half_rows = 0.0};
  const sim::LinkFit link{.alpha_us = 10.0, .gbps = 1.0};
  hw.intra_node = {.all_to_all = link, .all_reduce = link};
  hw.inter_node = {.all_to_all = {.alpha_us = 100.0, .gbps = 0.1}, .all_reduce = {.alpha_us = 100.0, .gbps = 0.1}};
  return hw;
}

Config config_of(std::vector<std::string> sets) {
  std::vector<std::string> all = {"model.d_model=64", "model.d_ff=128", "model.experts=4", "model.top_k=2",
                                  "model.seq_len=32", "model.n_layers=2", "model.n_heads=4", "train.global_batch=8",
                                  "train.micro_batch=2", "model.capacity_factor=0"};
  all.insert(all.end(), sets.begin(), sets.end());
  return Config::load(std::nullopt, all);
}

void write_file(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

std::string source_dir() { return MOERUN_SOURCE_DIR; }

}  // namespace

TEST(SimHardware, PresetsLoadAndSayWhereTheirNumbersComeFrom) {
  for (const char* name : {"trn1", "trn2", "h100-node"}) {
    const sim::Hardware hw = sim::load_hardware(source_dir() + "/sim/hardware/" + name + ".toml");
    EXPECT_EQ(hw.source, "specification") << name;
    EXPECT_GT(hw.gemm_seconds(DType::F32, 1024, 1024, 1024), hw.gemm_seconds(DType::BF16, 1024, 1024, 1024)) << name;
    EXPECT_GT(hw.intra_node.all_to_all.gbps, hw.inter_node.all_to_all.gbps) << name;
  }
  for (const char* name : {"zen4-2cores-1rank", "zen4-2cores-2ranks"}) {  // what calibrate wrote
    const sim::Hardware hw = sim::load_hardware(source_dir() + "/sim/hardware/measured/" + name + ".toml");
    EXPECT_TRUE(hw.measured()) << name;
    EXPECT_FALSE(hw.gemm_bf16.weight_grad.empty()) << name;
  }
}

TEST(SimHardware, AMissingOrNegativeFieldIsNamedWithTheFile) {
  const fs::path dir = temp_dir();
  std::ifstream in(source_dir() + "/sim/hardware/trn2.toml");
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto expect_error = [&](const std::string& text, const std::string& needle) {
    const fs::path p = dir / "bad.toml";
    write_file(p, text);
    try {
      sim::load_hardware(p.string());
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos) << e.what();
    }
  };
  std::string text = good;
  text.replace(text.find("elementwise_gbps"), 16, "elementwise_gbpz");
  expect_error(text, "field compute.elementwise_gbps is missing");
  text = good;
  text.replace(text.find("gbps = 25.0"), 11, "gbps = -2.0");
  expect_error(text, "field links.inter_node.all_to_all.gbps = -2 must be >=");
  text = good;
  text.replace(text.find("source = \"specification\""), 24, "source = \"guess\"");
  expect_error(text, "must be \"measured\" or \"specification\"");
  expect_error("[hardware\nname=", "cannot be read");
  EXPECT_THROW(sim::load_hardware((dir / "none.toml").string()), ConfigError);
  fs::remove_all(dir);
}

TEST(SimHardware, MeasuredTablesSurviveTheRoundTripAndInterpolateInLogSpace) {
  sim::Hardware hw = exact_hardware();
  hw.source = "measured";
  const sim::RateTable table{.rows = {16, 256}, .cols = {128, 512}, .inner = {128, 512}, .gflops = {10, 20, 30, 40, 50, 60, 70, 80}};
  sim::RateTable slower = table;
  for (double& g : slower.gflops) g /= 2;
  hw.gemm_f32 = {.forward = table, .data_grad = table, .weight_grad = slower};
  hw.gemm_bf16 = hw.gemm_f32;
  hw.attention_f32 = {.rows = {64, 256}, .gflops = {5, 20}};
  hw.attention_bf16 = hw.attention_f32;
  const fs::path dir = temp_dir();
  sim::save_hardware(hw, (dir / "m.toml").string());
  const sim::Hardware back = sim::load_hardware((dir / "m.toml").string());
  fs::remove_all(dir);
  EXPECT_EQ(back.gemm_f32.forward.gflops, table.gflops);
  EXPECT_EQ(back.gemm_bf16.weight_grad.gflops, slower.gflops);
  const sim::RateTable& f = back.gemm_f32.forward;
  EXPECT_DOUBLE_EQ(f.at(256, 128, 512), 60.0);    // a grid point
  EXPECT_DOUBLE_EQ(f.at(4096, 4096, 4096), 80.0);  // clamped at the far corner
  EXPECT_NEAR(back.attention_f32.at(128), 10.0, 1e-9);  // halfway in log: the geometric mean of 5 and 20
  EXPECT_NEAR(f.at(64, 128, 128), std::sqrt(10.0 * 50.0), 1e-9);
  // A weight gradient is charged at its own table's rate.
  EXPECT_NEAR(back.gemm_seconds(DType::F32, 256, 128, 512, sim::GemmRole::WeightGrad),
              2 * back.gemm_seconds(DType::F32, 256, 128, 512, sim::GemmRole::Forward), 1e-15);
  EXPECT_DOUBLE_EQ(back.intra_node.all_to_all.alpha_us, 10.0);
}

TEST(SimStepModel, ExpertTimeIsTheFlopsAtTheHardwareRate) {
  const Config config = config_of({});
  const sim::Hardware hw = exact_hardware();
  const sim::StepModel model(config, 1, 2, hw);
  // GELU FFN: forward x W1 and h W2, backward two GEMMs each: 6 GEMMs of 2 r d ff FLOPs.
  EXPECT_NEAR(model.expert_seconds(100), 6 * 2.0 * 100 * 64 * 128 / 1e12, 1e-15);
  const Config swiglu = config_of({"model.expert_type=swiglu"});
  const sim::StepModel model2(swiglu, 1, 2, hw);
  EXPECT_NEAR(model2.expert_seconds(100), 9 * 2.0 * 100 * 64 * 128 / 1e12, 1e-15);
}

TEST(SimStepModel, BalancedRoutingOverTwoRanksGivesTheDerivedStep) {
  const Config config = config_of({"parallel.ep=2"});
  const sim::Hardware hw = exact_hardware();
  const sim::StepModel model(config, 2, 2, hw);
  sim::RoutingSource balanced(sim::RoutingSpec::parse("balanced"), config, 2, model.moe_layers(), 1);
  const sim::Routing routed = balanced.next();
  // Per rank and step: 2 micro-batches of 64 tokens, 2 copies each: 256 copies, 64 per expert.
  ASSERT_DOUBLE_EQ(routed[0][1][3], 64.0);
  const std::vector<Placement> contiguous(2, Placement::contiguous(4, 2));
  const sim::StepTime t = model.step(routed, contiguous);
  EXPECT_DOUBLE_EQ(t.imbalance, 1.0);
  // Each rank's two experts get 32 copies per micro-batch from each rank: 64 rows each.
  EXPECT_NEAR(t.expert, 2 /*layers*/ * 2 /*micro-batches*/ * 2 /*experts*/ * model.expert_seconds(64), 1e-12);
  // Rank 0 sends half of its 128 copies per micro-batch (64 rows of 64 fp32 values) in each
  // of 4 exchanges, and receives as much; plus one counts exchange (alpha) per layer and micro-batch.
  const double bytes = 64 * 64 * 4.0;
  EXPECT_NEAR(t.all_to_all, 2 * 2 * (4 * (10e-6 + bytes / 1e9) + 10e-6), 1e-12);
  EXPECT_DOUBLE_EQ(t.a2a_bytes_rank0, 2 * 2 * 4 * bytes);
  EXPECT_DOUBLE_EQ(t.a2a_bytes, 2 * t.a2a_bytes_rank0);
  EXPECT_DOUBLE_EQ(t.a2a_messages_intra_node, 2 * 2 * 4 * 2);
}

TEST(SimStepModel, AFlatExchangeChargesEveryMessageAtItsLinksRate) {
  // EP 4 over two nodes of two: each rank sends to one rank on its node and two on the other.
  const Config config = config_of({"parallel.ep=4", "parallel.all_to_all=flat", "train.global_batch=8", "train.micro_batch=2"});
  const sim::Hardware hw = exact_hardware();
  const sim::StepModel model(config, 4, 2, hw);
  ASSERT_FALSE(model.hierarchical());
  sim::RoutingSource balanced(sim::RoutingSpec::parse("balanced"), config, 4, model.moe_layers(), 1);
  const sim::StepTime t = model.step(balanced.next(), std::vector<Placement>(2, Placement::contiguous(4, 4)));
  // 128 copies per rank, 32 to each expert (one per rank): 32 rows of 256 bytes to each peer.
  const double bytes = 32 * 64 * 4.0;
  const double one = (10e-6 + bytes / 1e9) + 2 * (100e-6 + bytes / 0.1e9);  // per exchange, every rank alike
  const double counts = 3 * 100e-6;  // the counts: one message to each of the 3 peers, at the group's inter-node alpha
  EXPECT_NEAR(t.all_to_all, 2 * (4 * one + counts), 1e-12);
  EXPECT_DOUBLE_EQ(t.a2a_bytes_inter_node, 2 * 4 * 4 * 2 * bytes);
  EXPECT_DOUBLE_EQ(t.a2a_messages_inter_node, 2 * 4 * 4 * 2);
  EXPECT_DOUBLE_EQ(t.a2a_messages_intra_node, 2 * 4 * 4 * 1);
  // Through node leaders the same rows travel in fewer, larger inter-node messages.
  const Config leaders = config_of({"parallel.ep=4", "parallel.all_to_all=hierarchical", "train.global_batch=8", "train.micro_batch=2"});
  const sim::StepModel via(leaders, 4, 2, hw);
  ASSERT_TRUE(via.hierarchical());
  const sim::StepTime h = via.step(balanced.next(), std::vector<Placement>(2, Placement::contiguous(4, 4)));
  EXPECT_DOUBLE_EQ(h.a2a_messages_inter_node, 2 * 4 * 2);  // one per ordered node pair and exchange
  EXPECT_DOUBLE_EQ(h.a2a_bytes_inter_node, t.a2a_bytes_inter_node);
}

TEST(SimStepModel, SkewSetsTheStepByTheSlowestRankAndReplicationHelps) {
  const Config config = config_of({"parallel.ep=2"});
  const sim::Hardware hw = exact_hardware();
  const sim::StepModel model(config, 2, 2, hw);
  // Every rank sends 200 copies to expert 0 and 20 to each other expert, per step.
  sim::Routing routed(2, std::vector<std::vector<double>>(2, {200, 20, 20, 16}));
  const std::vector<Placement> contiguous(2, Placement::contiguous(4, 2));
  const sim::StepTime skewed = model.step(routed, contiguous);
  // Rank 0 holds experts 0 and 1: (200 + 20) x 2 sources / 2 micro-batches rows per layer.
  EXPECT_NEAR(skewed.expert, 2 * 2 * (model.expert_seconds(200) + model.expert_seconds(20)), 1e-12);
  EXPECT_NEAR(skewed.imbalance, 440.0 / 256.0, 1e-12);
  // Expert 0 on both ranks (each keeps its own copies), 1 with it on rank 0, 2 and 3 on rank 1.
  const Placement replicated(2, {{{0, 1}, {1, 1}}, {{0, 1}}, {{1, 1}}, {{1, 1}}});
  const sim::StepTime better = model.step(routed, std::vector<Placement>(2, replicated));
  EXPECT_LT(better.expert, skewed.expert);
  EXPECT_LT(better.imbalance, skewed.imbalance);
}

// A rank sums the gradients of the replicated experts it holds one after another: two experts
// replicated on both ranks cost each rank twice what one does.
TEST(SimStepModel, ReplicasAddTheirGradientReductionPerRank) {
  const Config config = config_of({"parallel.ep=2"});
  const sim::StepModel model(config, 2, 2, exact_hardware());
  const sim::Routing routed(2, std::vector<std::vector<double>>(2, {64, 64, 64, 64}));
  const double none = model.step(routed, std::vector<Placement>(2, Placement::contiguous(4, 2))).allreduce;
  const Placement one(2, {{{0, 1}, {1, 1}}, {{0, 1}}, {{1, 1}}, {{1, 1}}});
  const Placement two(2, {{{0, 1}, {1, 1}}, {{0, 1}}, {{0, 1}, {1, 1}}, {{1, 1}}});
  const double with_one = model.step(routed, std::vector<Placement>(2, one)).allreduce - none;
  const double with_two = model.step(routed, std::vector<Placement>(2, two)).allreduce - none;
  EXPECT_GT(with_one, 0.0);
  EXPECT_NEAR(with_two, 2 * with_one, 1e-12);
  // The planner is told the same link's rate.
  EXPECT_DOUBLE_EQ(model.replica_reduce_bandwidth(), 1e9 * exact_hardware().intra_node.all_reduce.gbps);
}

TEST(SimStepModel, ALayoutMoerunRefusesIsRefused) {
  const Config config = config_of({"parallel.ep=3"});
  EXPECT_THROW(sim::StepModel(config, 4, 2, exact_hardware()), ConfigError);
}

TEST(SimRouting, SampledRoutingKeepsEveryCopyAndFollowsTheSkew) {
  const Config config = config_of({"model.experts=8"});
  sim::RoutingSource zipf(sim::RoutingSpec::parse("zipf:1.2"), config, 4, 2, 7);
  const sim::Routing r = zipf.next();
  for (const auto& layer : r)
    for (const auto& rank : layer) {
      EXPECT_DOUBLE_EQ(std::accumulate(rank.begin(), rank.end(), 0.0), 128.0);  // 1 micro-batch of 64 tokens, 2 copies each
      EXPECT_GT(rank[0], rank[7]);
    }
  EXPECT_THROW(sim::RoutingSpec::parse("zipf:-1"), ConfigError);
  EXPECT_THROW(sim::RoutingSpec::parse("skewed"), ConfigError);
}

TEST(SimRouting, ATraceReplaysExactlyAndResamplesToMoreRanksAndExperts) {
  const fs::path dir = temp_dir();
  const std::string path = (dir / "trace.h5").string();
  const ckpt::RoutingTraceShape shape{.layers = 2, .ranks = 2, .experts = 4, .top_k = 2, .dp = 1, .ep = 2, .tokens_per_step = 256};
  {
    ckpt::RoutingTraceWriter w(path, shape);
    std::vector<std::int64_t> routed(2 * 2 * 4), kept(2 * 4, 0);
    for (std::int64_t step = 1; step <= 3; ++step) {
      for (std::size_t i = 0; i < routed.size(); ++i) routed[i] = static_cast<std::int64_t>(i) * step;
      w.append(step, routed, kept);
    }
  }
  const Config same = config_of({"parallel.ep=2"});  // 2 ranks x 128 tokens = 256 per step
  sim::RoutingSource replay(sim::RoutingSpec::parse("trace:" + path), same, 2, 2, 1);
  replay.next();
  const sim::Routing second = replay.next();
  EXPECT_DOUBLE_EQ(second[1][0][2], double((1 * 8 + 0 * 4 + 2) * 2));  // layer 1, rank 0, expert 2 at step 2
  // Four ranks with twice the experts: rank 3 replays rank 1, each expert split in two.
  const Config bigger = config_of({"parallel.ep=4", "model.experts=8", "train.global_batch=16"});
  sim::RoutingSource resampled(sim::RoutingSpec::parse("trace:" + path), bigger, 4, 2, 1);
  const sim::Routing first = resampled.next();
  for (int e = 0; e < 4; ++e)
    EXPECT_DOUBLE_EQ(first[0][3][2 * e] + first[0][3][2 * e + 1], double(4 + e)) << "expert " << e;
  // Top-8 where the trace was top-2: four times the copies. The traced expert's copies are
  // scaled first and then split, so the split has the noise of the simulated counts (a
  // binomial at 4 x 45 copies: variance about the mean), not four times the traced split's
  // noise (variance about 4 x the mean, every count a multiple of 4).
  const Config top8 = config_of({"parallel.ep=2", "model.experts=128", "model.top_k=8"});
  sim::RoutingSource scaled(sim::RoutingSpec::parse("trace:" + path), top8, 2, 2, 1);
  scaled.next();
  scaled.next();
  const sim::Routing third = scaled.next();
  const std::vector<double>& row = third[1][1];  // layer 1, rank 1: traced expert 3 holds 15 x 3 copies
  double sum = 0.0, squares = 0.0;
  bool all_multiples_of_4 = true;
  for (int c = 0; c < 32; ++c) {
    const double n = row[static_cast<std::size_t>(3 * 32 + c)];
    sum += n, squares += n * n;
    all_multiples_of_4 = all_multiples_of_4 && std::fmod(n, 4.0) == 0.0;
  }
  EXPECT_DOUBLE_EQ(sum, 4.0 * 45);
  const double mean = sum / 32, variance = squares / 32 - mean * mean;
  EXPECT_LT(variance, 2.0 * mean) << "mean " << mean;
  EXPECT_FALSE(all_multiples_of_4);
  // A trace of another depth, or experts that do not divide, is refused with the file's name.
  const Config deeper = config_of({"model.n_layers=3"});
  try {
    sim::RoutingSource bad(sim::RoutingSpec::parse("trace:" + path), deeper, 1, 3, 1);
    ADD_FAILURE() << "a trace of 2 layers replayed for 3";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("has 2 MoE layers but the config has 3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
  }
  EXPECT_THROW(sim::RoutingSource(sim::RoutingSpec::parse("trace:" + path), config_of({"model.experts=6"}), 1, 2, 1), ConfigError);
  EXPECT_THROW(sim::RoutingSource(sim::RoutingSpec::parse("trace:/no/such.h5"), same, 2, 2, 1), Error);
  fs::remove_all(dir);
}

TEST(SimLoop, StaticPlacementIsTheModelStepByStepAndAutoBalancesPersistentSkew) {
  const sim::Hardware trn2 = sim::load_hardware(source_dir() + "/sim/hardware/trn2.toml");
  const std::vector<std::string> big = {"model.d_model=1024", "model.d_ff=4096", "model.experts=64", "model.top_k=4",
                                        "model.seq_len=1024", "model.n_layers=2", "model.n_heads=8", "train.global_batch=256",
                                        "train.micro_batch=4", "parallel.ep=64", "model.capacity_factor=0",
                                        "train.precision=bf16", "balance.interval=20", "balance.window=5"};
  auto with = [&](const std::string& policy) {
    std::vector<std::string> s = big;
    s.push_back("balance.policy=" + policy);
    return Config::load(std::nullopt, s);
  };
  const sim::SimOptions options{.world_size = 64, .ranks_per_node = 8, .steps = 45, .routing = sim::RoutingSpec::parse("zipf:1.2")};
  const sim::SimResult none = sim::simulate(with("none"), trn2, options);
  EXPECT_EQ(none.rebalances, 0);
  const sim::SimResult automatic = sim::simulate(with("auto"), trn2, options);
  ASSERT_GE(automatic.rebalances, 1);
  EXPECT_LT(automatic.steps.back().time.imbalance, none.steps.back().time.imbalance);
  EXPECT_LT(automatic.median_step, none.median_step);
  // Same seed, same routing: the first interval's steps are identical before any decision.
  EXPECT_DOUBLE_EQ(automatic.steps[3].time.total(), none.steps[3].time.total());
  const sim::SimResult eplb = sim::simulate(with("eplb"), trn2, options);
  EXPECT_GE(eplb.rebalances, 1);
}

}  // namespace moerun::test
