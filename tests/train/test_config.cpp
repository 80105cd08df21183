// Config loading: defaults, TOML files, --set overrides, and errors that name the key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "runtime/error.h"
#include "train/config.h"
#include "train/wiring.h"
#include "expect_error.h"

namespace moerun::test {
namespace {

std::string write_temp(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / name;
  std::ofstream(path) << text;
  return path.string();
}

}  // namespace

TEST(Config, DefaultsTrainWithoutAnyFile) {
  const Config c = Config::load(std::nullopt, {});
  EXPECT_NO_THROW(c.validate(1));
  EXPECT_EQ(c.data.source, "synthetic");
}

TEST(Config, FileThenOverridesInOrder) {
  const std::string path = write_temp("moerun_cfg.toml", R"(
[model]
d_model = 64
n_heads = 2
expert_type = "swiglu"
capacity_factor = 0
[train]
lr = 1e-3
[data]
tasks = ["add", "sort"]
)");
  const Config c = Config::load(path, {"model.d_model=32", "train.steps=7", "data.source=my file.txt", "train.lr=2"});
  EXPECT_EQ(c.model.d_model, 32);
  EXPECT_EQ(c.model.n_heads, 2);
  EXPECT_EQ(c.model.expert_type, ExpertType::SwiGlu);
  EXPECT_EQ(c.model.capacity_factor, 0.0);
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_EQ(c.train.lr, 2.0);  // an integer is accepted where a number is expected
  EXPECT_EQ(c.data.source, "my file.txt");
  EXPECT_EQ(c.data.tasks, (std::vector<std::string>{"add", "sort"}));
  const auto j = c.to_json();
  EXPECT_EQ(j["model"]["d_model"], 32);
  EXPECT_EQ(j["model"]["expert_type"], "swiglu");
}

TEST(Config, UnknownKeysAndWrongTypesNameTheKey) {
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"model.dmodel=3"}); }, {"model.dmodel", "model.d_model"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"modle.d_model=3"}); }, {"modle.d_model", "sections are"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"model.d_model=big"}); }, {"model.d_model", "integer", "big"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"model.d_model=1.5"}); }, {"model.d_model", "integer"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"model.expert_type=relu"}); }, {"model.expert_type", "swiglu"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"bench.router_balanced=true", "bench.router_zipf=1.2"}).validate(1); },
                            {"bench.router_balanced", "bench.router_zipf = 1.2", "set one of them"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"no-equals-sign"}); }, {"section.key=value"});
  // Options with named values are parsed into enums once, here; an unknown name lists the known ones.
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"balance.policy=\"greedy\""}); },
                            {"balance.policy", "greedy", "none, migrate, replicate, auto"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"train.recompute=\"some\""}); }, {"train.recompute", "none, moe, full"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"parallel.all_to_all=\"ring\""}); },
                            {"parallel.all_to_all", "auto, flat, hierarchical"});
  // Routing policies are registered by name (model/router.h).
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"model.router=\"hash\""}).validate(1); },
                            {"model.router", "hash", "softmax_topk"});
  const std::string path = write_temp("moerun_bad_key.toml", "[train]\nstepz = 3\n");
  expect_error<ConfigError>([&] { Config::load(path, {}); }, {"train.stepz", "moerun_bad_key.toml", "train.steps"});
}

// Allowed but easy to misread: aux_free with a balancing-loss coefficient (the sequence-wise loss
// is added), none with one (ignored); the default config has nothing to say.
TEST(Config, NotesNameSettingsThatAreAllowedButEasyToMisread) {
  EXPECT_TRUE(Config::load(std::nullopt, {}).notes().empty());
  const auto contains = [](const std::vector<std::string>& notes, const std::string& fragment) {
    for (const auto& n : notes)
      if (n.find(fragment) != std::string::npos) return true;
    return false;
  };
  const Config aux_free = Config::load(std::nullopt, {"model.balance=\"aux_free\"", "model.aux_loss_coef=0.001"});
  EXPECT_TRUE(contains(aux_free.notes(), "sequence-wise aux loss is added too"));
  EXPECT_TRUE(Config::load(std::nullopt, {"model.balance=\"aux_free\"", "model.aux_loss_coef=0"}).notes().empty());
  EXPECT_TRUE(contains(Config::load(std::nullopt, {"model.balance=\"none\""}).notes(), "ignores model.aux_loss_coef"));
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"model.balance=\"aux_frei\""}); },
                            {"model.balance", "aux_free"});
}

TEST(Config, MalformedTomlSaysWhere) {
  const std::string path = write_temp("moerun_malformed.toml", "[model]\nd_model = = 3\n");
  expect_error<ConfigError>([&] { Config::load(path, {}); }, {"moerun_malformed.toml", "line 2"});
}

TEST(Config, ImpossibleValuesAreRefusedWithTheRule) {
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"model.top_k=5", "model.experts=4"}); },
                      {"model.top_k = 5", "model.experts = 4"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"model.d_model=100", "model.n_heads=3"}); },
                      {"model.d_model = 100", "model.n_heads = 3"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"train.global_batch=30", "train.micro_batch=16"}).validate(1); },
                      {"train.global_batch = 30", "16"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"parallel.ep=3"}).validate(4); }, {"parallel.ep = 3", "world size 4"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"parallel.ep=3", "model.experts=4"}).validate(3); },
                      {"model.experts = 4", "parallel.ep = 3"});
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"train.lr=0"}).validate(1); }, {"train.lr"});
}

TEST(Config, ReferenceListsTheContractKeys) {
  const std::string ref = Config::reference_markdown();
  for (const char* key : {"model.d_model", "model.n_layers", "model.n_heads", "model.seq_len", "model.experts",
                          "model.top_k", "model.d_ff", "model.capacity_factor", "train.steps", "train.global_batch",
                          "train.micro_batch", "train.lr", "train.seed", "data.source", "data.skew"}) {
    EXPECT_NE(ref.find(std::string("`") + key + "`"), std::string::npos) << key;
  }
}

}  // namespace moerun::test

namespace moerun::test {

// parallel.all_to_all = auto: node leaders only when the group spans nodes with several ranks
// on one and a flat message to one peer is small (they save per-message latency, and cost one
// link carrying the node's rows); flat and hierarchical are taken as set.
TEST(Config, AutoExchangeTakesNodeLeadersOnlyForSmallMessagesAcrossNodes) {
  // 64 tokens x top-2 over ep 8, d_model 64 in fp32: 16 copies x 256 bytes = 4 KiB per peer.
  const Config small = Config::load(std::nullopt, {"model.d_model=64", "model.seq_len=64", "model.top_k=2",
                                                   "train.micro_batch=1", "parallel.ep=8", "model.experts=8"});
  EXPECT_DOUBLE_EQ(flat_exchange_message_bytes(small), 4096.0);
  const std::vector<int> two_nodes = {0, 0, 0, 0, 1, 1, 1, 1}, one_node(8, 0), one_rank_each = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_TRUE(use_hierarchical_exchange(small, two_nodes));
  EXPECT_FALSE(use_hierarchical_exchange(small, one_node));
  EXPECT_FALSE(use_hierarchical_exchange(small, one_rank_each));
  // 32 times the tokens: 128 KiB per peer, above the default 32 KiB.
  Config large = Config::load(std::nullopt, {"model.d_model=64", "model.seq_len=2048", "model.top_k=2",
                                             "train.micro_batch=1", "parallel.ep=8", "model.experts=8"});
  EXPECT_FALSE(use_hierarchical_exchange(large, two_nodes));
  large.parallel.leader_exchange_kib = 128;
  EXPECT_TRUE(use_hierarchical_exchange(large, two_nodes));
  large.parallel.all_to_all = ExchangeRoute::Flat;
  EXPECT_FALSE(use_hierarchical_exchange(large, two_nodes));
  large.parallel.all_to_all = ExchangeRoute::Hierarchical;
  large.parallel.leader_exchange_kib = 0;
  EXPECT_TRUE(use_hierarchical_exchange(large, one_node));
  expect_error<ConfigError>([] { Config::load(std::nullopt, {"parallel.leader_exchange_kib=-1"}).validate(1); },
                            {"parallel.leader_exchange_kib = -1", ">= 0"});
}

}  // namespace moerun::test
