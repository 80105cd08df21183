#include "train/config.h"
#include "train/memory_plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <functional>
#include <map>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>

#include "data/token_file.h"
#include "parallel/planner.h"
#include "runtime/error.h"
#include "runtime/vocab.h"

namespace moerun {
namespace {

using Json = nlohmann::json;

// One config key: how to set it from a TOML value, how to read it back as JSON.
struct Key {
  std::string name;  // "section.key"
  std::string type;  // for messages and the reference
  std::string help;
  std::function<void(Config&, const toml::node&)> set;
  std::function<Json(const Config&)> get;
};

[[noreturn]] void wrong_type(const std::string& key, const std::string& type, const toml::node& v) {
  std::ostringstream text;
  v.visit([&](const auto& value) { text << value; });
  text << " (a " << v.type() << ")";
  MOERUN_THROW(ConfigError, "{} must be {}, got {}", key, type, text.str());
}

template <class S>
Key int_key(std::string name, S Config::*section, std::int64_t S::*member, std::string help) {
  return {name, "integer", std::move(help),
          [=](Config& c, const toml::node& v) {
            auto x = v.value_exact<std::int64_t>();
            if (!x) wrong_type(name, "an integer", v);
            (c.*section).*member = *x;
          },
          [=](const Config& c) { return Json((c.*section).*member); }};
}

template <class S>
Key float_key(std::string name, S Config::*section, double S::*member, std::string help) {
  return {name, "number", std::move(help),
          [=](Config& c, const toml::node& v) {
            auto x = v.value<double>();  // integers are accepted as numbers
            if (!x || v.is_boolean() || v.is_string()) wrong_type(name, "a number", v);
            (c.*section).*member = *x;
          },
          [=](const Config& c) { return Json((c.*section).*member); }};
}

template <class S>
Key bool_key(std::string name, S Config::*section, bool S::*member, std::string help) {
  return {name, "boolean", std::move(help),
          [=](Config& c, const toml::node& v) {
            auto x = v.value_exact<bool>();
            if (!x) wrong_type(name, "true or false", v);
            (c.*section).*member = *x;
          },
          [=](const Config& c) { return Json((c.*section).*member); }};
}

template <class S>
Key string_key(std::string name, S Config::*section, std::string S::*member, std::string help) {
  return {name, "string", std::move(help),
          [=](Config& c, const toml::node& v) {
            auto x = v.value_exact<std::string>();
            if (!x) wrong_type(name, "a string", v);
            (c.*section).*member = *x;
          },
          [=](const Config& c) { return Json((c.*section).*member); }};
}

// A key whose string values name the members of an enum: parsed once, here.
template <class S, class E>
Key enum_key(std::string name, S Config::*section, E S::*member, std::vector<std::pair<std::string, E>> values,
             std::string help) {
  return {name, "string", std::move(help),
          [=](Config& c, const toml::node& v) {
            auto x = v.value_exact<std::string>();
            if (!x) wrong_type(name, "a string", v);
            std::vector<std::string> names;
            for (const auto& [text, value] : values) {
              if (text == *x) {
                (c.*section).*member = value;
                return;
              }
              names.push_back(text);
            }
            MOERUN_THROW(ConfigError, "{} = '{}' is not one of: {}", name, *x, fmt::join(names, ", "));
          },
          [=](const Config& c) {
            for (const auto& [text, value] : values)
              if (value == (c.*section).*member) return Json(text);
            return Json(nullptr);
          }};
}

const std::vector<Key>& keys() {
  static const std::vector<Key> table = [] {
    std::vector<Key> k;
    using C = Config;
    k.push_back(int_key("model.vocab_size", &C::model, &ModelConfig::vocab_size,
                        "token ids the model embeds and predicts: 259 (bytes, pad, bos, eos) for text and the synthetic "
                        "tasks; a token file's vocabulary (every id in it must be below this)"));
    k.push_back(int_key("model.d_model", &C::model, &ModelConfig::d_model, "width of the residual stream"));
    k.push_back(int_key("model.n_layers", &C::model, &ModelConfig::n_layers, "transformer blocks"));
    k.push_back(int_key("model.n_heads", &C::model, &ModelConfig::n_heads, "attention heads; must divide d_model"));
    k.push_back(int_key("model.seq_len", &C::model, &ModelConfig::seq_len, "tokens per sequence (context length)"));
    k.push_back(int_key("model.experts", &C::model, &ModelConfig::experts, "experts per MoE layer"));
    k.push_back(int_key("model.top_k", &C::model, &ModelConfig::top_k, "experts each token is routed to (1..experts)"));
    k.push_back(int_key("model.d_ff", &C::model, &ModelConfig::d_ff, "hidden width of each expert FFN"));
    k.push_back(int_key("model.shared_experts", &C::model, &ModelConfig::shared_experts,
                        "always-active experts per MoE layer (DeepSeek-MoE), added to the routed experts' output; 0 = "
                        "none"));
    k.push_back(int_key("model.shared_d_ff", &C::model, &ModelConfig::shared_d_ff,
                        "hidden width of each shared expert; 0 = model.d_ff"));
    k.push_back(float_key("model.capacity_factor", &C::model, &ModelConfig::capacity_factor,
                          "expert capacity = ceil(factor * tokens * top_k / experts) per micro-batch; 0 = dropless"));
    k.push_back(enum_key("moe.shapes", &C::model, &ModelConfig::shapes,
                         {{"dynamic", MoeShapes::Dynamic}, {"static", MoeShapes::Static}},
                         "per-step device shapes: dynamic (sized by the routed counts) or static (functions of the "
                         "config only, for compiled accelerators: with model.capacity_factor > 0 fixed expert slots of "
                         "capacity rows; with 0, blockwise dropless in blocks of moe.block_size rows; docs/device.md)"));
    k.push_back(int_key("moe.block_size", &C::model, &ModelConfig::block_size,
                        "moe.shapes = static with model.capacity_factor = 0: rows per block of blockwise dropless "
                        "(one expert per block, buffers for the worst-case block count); 0 = not blockwise"));
    k.push_back(string_key("model.router", &C::model, &ModelConfig::router,
                           "routing policy: softmax_topk (softmax probabilities, top-k gates, capacity, Switch aux "
                           "loss and z-loss)"));
    k.push_back({"model.expert_type", "string", "expert FFN: \"gelu\" or \"swiglu\"",
                 [](Config& c, const toml::node& v) {
                   auto x = v.value_exact<std::string>();
                   if (!x || (*x != "gelu" && *x != "swiglu")) wrong_type("model.expert_type", "\"gelu\" or \"swiglu\"", v);
                   c.model.expert_type = *x == "gelu" ? ExpertType::Gelu : ExpertType::SwiGlu;
                 },
                 [](const Config& c) { return Json(expert_type_name(c.model.expert_type)); }});
    k.push_back(enum_key("model.norm", &C::model, &ModelConfig::norm,
                         {{"layernorm", NormKind::LayerNorm}, {"rmsnorm", NormKind::RmsNorm}},
                         "normalization of each block's input and of the final hidden state: layernorm (scale and "
                         "shift) or rmsnorm (scale only, as Llama, Mixtral, DeepSeek)"));
    k.push_back(enum_key("model.position", &C::model, &ModelConfig::position,
                         {{"learned", PositionKind::Learned}, {"rope", PositionKind::Rope}},
                         "positions: learned (an embedding added to the tokens') or rope (rotary embeddings of q and k "
                         "in every attention layer, as Llama and Mixtral)"));
    k.push_back(float_key("model.rope_theta", &C::model, &ModelConfig::rope_theta,
                          "RoPE base: pair i of a head turns by position x rope_theta^(-2i / head width)"));
    k.push_back(int_key("model.dense_every", &C::model, &ModelConfig::dense_every,
                        "every n-th block has a dense FFN instead of MoE; 0 = all MoE"));
    k.push_back(enum_key("model.router_score", &C::model, &ModelConfig::router_score,
                         {{"softmax", RouterScore::Softmax}, {"sigmoid", RouterScore::Sigmoid}},
                         "expert scores from the router logits: softmax over the experts (Switch, Mixtral) or a sigmoid "
                         "per expert (DeepSeek-V3; needs model.z_loss_coef = 0); the gates are the chosen scores, "
                         "normalized over the k when top_k > 1"));
    k.push_back(enum_key("model.balance", &C::model, &ModelConfig::balance,
                         {{"aux_loss", Balance::AuxLoss}, {"seq_aux_loss", Balance::SeqAuxLoss},
                          {"aux_free", Balance::AuxFree}, {"none", Balance::None}},
                         "load balancing: aux_loss (Switch's loss per micro-batch), seq_aux_loss (the same per "
                         "sequence), aux_free (DeepSeek-V3's selection bias, moved by model.balance_rate each step; "
                         "a nonzero model.aux_loss_coef adds the sequence-wise loss), none"));
    k.push_back(float_key("model.balance_rate", &C::model, &ModelConfig::balance_rate,
                          "aux_free: bias += rate * sign(mean count - count) per expert after every step"));
    k.push_back(float_key("model.aux_loss_coef", &C::model, &ModelConfig::aux_loss_coef,
                          "load-balancing loss weight (model.balance = aux_loss or seq_aux_loss; aux_free's "
                          "sequence-wise complement)"));
    k.push_back(float_key("model.z_loss_coef", &C::model, &ModelConfig::z_loss_coef, "router z-loss weight"));
    k.push_back(bool_key("model.tie_embeddings", &C::model, &ModelConfig::tie_embeddings, "LM head shares the token embedding"));
    k.push_back(float_key("model.init_std", &C::model, &ModelConfig::init_std, "std of the normal weight initialization"));
    k.push_back(int_key("train.steps", &C::train, &TrainConfig::steps, "optimizer steps"));
    k.push_back(int_key("train.global_batch", &C::train, &TrainConfig::global_batch,
                        "sequences per optimizer step, the same whatever the world size"));
    k.push_back(int_key("train.micro_batch", &C::train, &TrainConfig::micro_batch,
                        "sequences per rank per forward pass; accumulation steps = global_batch / (micro_batch * ranks)"));
    k.push_back(float_key("train.lr", &C::train, &TrainConfig::lr, "peak learning rate"));
    k.push_back(float_key("train.min_lr_ratio", &C::train, &TrainConfig::min_lr_ratio, "final lr = lr * min_lr_ratio (cosine)"));
    k.push_back(int_key("train.warmup_steps", &C::train, &TrainConfig::warmup_steps, "linear warm-up steps"));
    k.push_back(float_key("train.weight_decay", &C::train, &TrainConfig::weight_decay, "AdamW decoupled weight decay (matrices only)"));
    k.push_back(float_key("train.beta1", &C::train, &TrainConfig::beta1, "AdamW beta1"));
    k.push_back(float_key("train.beta2", &C::train, &TrainConfig::beta2, "AdamW beta2"));
    k.push_back(float_key("train.epsilon", &C::train, &TrainConfig::epsilon, "AdamW epsilon"));
    k.push_back(float_key("train.grad_clip", &C::train, &TrainConfig::grad_clip, "global gradient-norm clip; 0 disables"));
    k.push_back(int_key("train.seed", &C::train, &TrainConfig::seed, "seed of initialization and data"));
    k.push_back(enum_key("train.recompute", &C::train, &TrainConfig::recompute,
                         {{"none", Recompute::None}, {"moe", Recompute::Moe}, {"full", Recompute::Full}},
                           "activation recomputation: none, moe (expert FFN activations), full (each block's forward again "
                           "in backward)"));
    k.push_back(enum_key("train.precision", &C::model, &ModelConfig::compute_dtype,
                         {{"fp32", DType::F32}, {"bf16", DType::BF16}},
                         "fp32, or bf16 mixed precision: bf16 activations, matmul operands and token exchange; fp32 "
                         "master weights, gradients, optimizer, residual stream, norms, softmax, router and loss "
                         "(docs/precision.md)"));
    k.push_back(bool_key("train.shard_optimizer", &C::train, &TrainConfig::shard_optimizer,
                         "ZeRO-1: partition AdamW moments and updates over the data-parallel copies of each parameter "
                         "(reduce-scatter gradients, all-gather parameters)"));
    k.push_back(float_key("train.max_loss_ratio", &C::train, &TrainConfig::max_loss_ratio,
                          "loss-spike guard: a step whose loss exceeds this multiple of the median of the last 20 "
                          "steps is not applied (see train.loss_spike); 0 = off"));
    k.push_back(enum_key("train.loss_spike", &C::train, &TrainConfig::loss_spike,
                         {{"stop", LossSpikeAction::Stop}, {"skip", LossSpikeAction::Skip}},
                         "what the loss-spike guard does: stop (end the run before the update, nothing saved) or skip "
                         "(drop the step's update and go on)"));
    k.push_back(string_key("data.source", &C::data, &DataConfig::source, "\"synthetic\" or the path of a text / token file"));
    k.push_back(string_key("data.format", &C::data, &DataConfig::format, "token file format: auto, text, u16, u32"));
    k.push_back(float_key("data.skew", &C::data, &DataConfig::skew,
                          "synthetic domain skew: P(task i) ~ 1 / (i + 1)^skew; 0 = uniform"));
    k.push_back({"data.tasks", "array of strings", "synthetic tasks: add, reverse, sort, brackets",
                 [](Config& c, const toml::node& v) {
                   const toml::array* arr = v.as_array();
                   if (arr == nullptr) wrong_type("data.tasks", "an array of strings", v);
                   c.data.tasks.clear();
                   for (const auto& e : *arr) {
                     auto s = e.value_exact<std::string>();
                     if (!s) wrong_type("data.tasks", "an array of strings", v);
                     c.data.tasks.push_back(*s);
                   }
                 },
                 [](const Config& c) { return Json(c.data.tasks); }});
    k.push_back(float_key("data.valid_fraction", &C::data, &DataConfig::valid_fraction,
                          "token files: the fraction at the end held out for the validation loss (0 < f < 1)"));
    k.push_back(string_key("data.valid_source", &C::data, &DataConfig::valid_source,
                           "a separate held-out token file for the validation loss (same format and vocabulary); "
                           "empty = the end of data.source"));
    k.push_back(int_key("data.digits", &C::data, &DataConfig::digits, "maximum digits of addition operands"));
    k.push_back(int_key("eval.every", &C::eval, &EvalConfig::every, "steps between evaluations; 0 = only at the end"));
    k.push_back(int_key("eval.examples", &C::eval, &EvalConfig::examples, "greedy exact-match examples per task"));
    k.push_back(int_key("eval.heldout_batches", &C::eval, &EvalConfig::heldout_batches, "micro-batches of held-out loss"));
    k.push_back(int_key("parallel.ep", &C::parallel, &ParallelConfig::ep, "expert-parallel group size; must divide the world size and model.experts"));
    k.push_back(enum_key("parallel.all_to_all", &C::parallel, &ParallelConfig::all_to_all,
                         {{"auto", ExchangeRoute::Auto}, {"flat", ExchangeRoute::Flat},
                          {"hierarchical", ExchangeRoute::Hierarchical}},
                           "token exchange: flat (rank to rank), hierarchical (rows for other nodes through node leaders: "
                           "one inter-node message per pair of nodes), auto (hierarchical when the EP group spans nodes "
                           "with several ranks on one and a flat message is at most parallel.leader_exchange_kib)"));
    k.push_back(float_key("parallel.leader_exchange_kib", &C::parallel, &ParallelConfig::leader_exchange_kib,
                          "with parallel.all_to_all = auto: the largest average flat message to one peer (micro_batch x "
                          "seq_len x top_k / ep token-copies of d_model values in the compute dtype), in KiB, for which "
                          "the node-leader exchange is taken; above it one leader's link carrying its node's rows costs "
                          "more than the saved messages (moerun-sim crossovers: about 35 KiB on trn2, 90 KiB on H100 "
                          "nodes)"));
    k.push_back(enum_key("parallel.grad_reduce_dtype", &C::parallel, &ParallelConfig::grad_reduce_dtype,
                         {{"fp32", DType::F32}, {"bf16", DType::BF16}},
                         "gradient all-reduce on the wire: fp32, or bf16 (half the bytes; each addition in fp32, the "
                         "sum lands in the fp32 gradients)"));
    k.push_back(enum_key("parallel.dispatch_dtype", &C::model, &ModelConfig::dispatch_dtype,
                         {{"auto", DispatchDtype::Auto}, {"bf16", DispatchDtype::Bf16}, {"fp8", DispatchDtype::Fp8}},
                         "forward token dispatch payload: auto (the compute dtype), bf16, or fp8 (e4m3 with an fp32 "
                         "scale per parallel.fp8_scale_block values, as DeepEP); combine and backward stay in the "
                         "compute dtype (docs/precision.md)"));
    k.push_back(int_key("parallel.fp8_scale_block", &C::model, &ModelConfig::fp8_scale_block,
                        "values per fp32 scale of fp8 dispatch; must divide model.d_model; 0 = one scale per row"));
    k.push_back(float_key("parallel.bucket_mb", &C::parallel, &ParallelConfig::bucket_mb,
                          "gradient all-reduce bucket size in MiB; buckets are reduced during backward as they complete"));
    k.push_back(int_key("parallel.ranks_per_node", &C::parallel, &ParallelConfig::ranks_per_node,
                        "ranks per node for the intra/inter-node accounting; 0 = detected (shared memory); n > 0 "
                        "treats consecutive blocks of n ranks as nodes (to study multi-node layouts on one machine)"));
    k.push_back(enum_key("balance.policy", &C::balance, &BalanceConfig::policy,
                         {{"none", BalancePolicy::None}, {"migrate", BalancePolicy::Migrate},
                          {"replicate", BalancePolicy::Replicate}, {"auto", BalancePolicy::Auto}, {"eplb", BalancePolicy::Eplb}},
                           "adaptive expert placement: none (static), migrate (permute experts), replicate (extra "
                           "copies of hot experts), auto (the cost model chooses between migrate and replicate), eplb (DeepSeek's "
                           "EPLB: experts packed onto nodes, hot ones replicated within the node, for comparison); needs "
                           "parallel.ep > 1"));
    k.push_back(int_key("balance.interval", &C::balance, &BalanceConfig::interval, "steps between placement decisions"));
    k.push_back(float_key("balance.threshold", &C::balance, &BalanceConfig::threshold,
                          "act only when the load imbalance (max rank load / mean) exceeds this"));
    k.push_back(float_key("balance.min_gain", &C::balance, &BalanceConfig::min_gain,
                          "act only when the step time is expected to fall (the prediction at the share past changes realized and the share that persisted) by at least this fraction (measurement noise); a change whose passes measured slower by more than it is undone at the next decision"));
    k.push_back(int_key("balance.max_experts_per_rank", &C::balance, &BalanceConfig::max_experts_per_rank,
                        "expert slots per rank, replicas included (memory budget); 0 = experts / ep + 1"));
    k.push_back(int_key("balance.window", &C::balance, &BalanceConfig::window, "moving-average window of expert loads (steps)"));
    k.push_back(bool_key("balance.force", &C::balance, &BalanceConfig::force,
                         "apply every different placement the planner proposes, whatever its predicted gain"));
    k.push_back(float_key("bench.router_zipf", &C::model, &ModelConfig::router_zipf,
                          "BENCHMARK ONLY, changes the math: fixed router logit bias making expert popularity "
                          "follow Zipf(s); 0 = off"));
    k.push_back(bool_key("bench.router_balanced", &C::model, &ModelConfig::router_balanced,
                         "BENCHMARK ONLY, changes the math: forced-balanced routing, token-copy i of a micro-batch to "
                         "expert i mod experts (gates are those experts' scores); the step time of perfect balance, "
                         "the bound on any placement's gain (docs/adaptive-ep.md)"));
    k.push_back(int_key("checkpoint.every", &C::checkpoint, &CheckpointConfig::every,
                        "steps between checkpoints in <run-dir>/checkpoints; 0 = only at the end and on SIGTERM/SIGUSR1"));
    k.push_back(int_key("checkpoint.keep", &C::checkpoint, &CheckpointConfig::keep, "newest checkpoints kept"));
    k.push_back(bool_key("checkpoint.at_end", &C::checkpoint, &CheckpointConfig::at_end,
                         "write a checkpoint when the run ends; false for benchmarks and sweeps that will not resume "
                         "(signals still write one)"));
    k.push_back(int_key("log.every", &C::log, &LogConfig::every, "steps between progress lines when not redrawing in place"));
    k.push_back(string_key("log.progress", &C::log, &LogConfig::progress,
                           "auto (redraw in place on a terminal, plain lines otherwise and under mpirun, whose "
                           "output is a pseudo-terminal even when redirected), redraw, lines"));
    k.push_back(bool_key("log.trace", &C::log, &LogConfig::trace,
                         "write a per-rank timeline (Chrome trace-event JSON) to <run-dir>/trace/rank_<r>.json; "
                         "launch/merge_traces.py <run-dir> joins the ranks for Perfetto"));
    k.push_back(bool_key("log.routing_trace", &C::log, &LogConfig::routing_trace,
                         "write every step's routed token-copies per MoE layer, source rank and expert (and the "
                         "processed copies per expert) to <run-dir>/routing/steps_<first step>.h5 (HDF5, h5py-readable)"));
    k.push_back(bool_key("log.planner_inputs", &C::log, &LogConfig::planner_inputs,
                         "write each rebalance decision's whole planner input (loads, placements, cost model, gates) "
                         "into its events.jsonl line, for `moerun-sim replay <run-dir>` to check or study the decision"));
    k.push_back(string_key("runtime.device", &C::runtime, &RuntimeConfig::device,
                           "compute backend by name: cpu (oneDNN); the registry lists what a build has"));
    k.push_back(float_key("runtime.collective_timeout", &C::runtime, &RuntimeConfig::collective_timeout,
                          "seconds a collective, token exchange or checkpoint write may make no progress before every "
                          "rank that can still act reports it and the job ends (a stopped or dead peer); 0 = off"));
    k.push_back(int_key("runtime.threads", &C::runtime, &RuntimeConfig::threads,
                        "compute threads per rank; 0 = cores / ranks on this node (OMP_NUM_THREADS wins when set)"));
    k.push_back(string_key("runtime.memory_limit", &C::runtime, &RuntimeConfig::memory_limit,
                           "device bytes per rank a layout may need (estimate of moerun --dry-run): \"24GiB\", "
                           "\"512MiB\", \"80%\" of RAM, \"auto\" (90% of the node's memory shared by its ranks); a "
                           "layout over it is refused before training; \"0\" = no limit"));
    return k;
  }();
  return table;
}

const Key* find_key(const std::string& name) {
  for (const Key& k : keys())
    if (k.name == name) return &k;
  return nullptr;
}

[[noreturn]] void unknown_key(const std::string& name, const std::string& where) {
  const std::string section = name.substr(0, name.find('.'));
  std::vector<std::string> same;
  for (const Key& k : keys())
    if (k.name.rfind(section + ".", 0) == 0) same.push_back(k.name);
  if (same.empty()) {
    std::vector<std::string> sections;
    for (const Key& k : keys()) {
      std::string s = k.name.substr(0, k.name.find('.'));
      if (std::find(sections.begin(), sections.end(), s) == sections.end()) sections.push_back(s);
    }
    MOERUN_THROW(ConfigError, "unknown config key '{}' ({}); sections are: {}", name, where, fmt::join(sections, ", "));
  }
  MOERUN_THROW(ConfigError, "unknown config key '{}' ({}); keys of [{}]: {}", name, where, section, fmt::join(same, ", "));
}

void apply_table(Config& c, const toml::table& table, const std::string& prefix, const std::string& where) {
  for (const auto& [k, v] : table) {
    const std::string name = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    const Key* key = find_key(name);
    if (key == nullptr && v.is_table()) {
      apply_table(c, *v.as_table(), name, where);
      continue;
    }
    if (key == nullptr) unknown_key(name, where);
    key->set(c, v);
  }
}

// The keys that define the model's tensors (and top_k, which the routing statistics in a
// checkpoint depend on): a resumed run may not change them.
const std::vector<std::string>& shape_keys() {
  static const std::vector<std::string> names = {
      "model.vocab_size",  "model.d_model",   "model.n_layers",  "model.n_heads",        "model.seq_len",     "model.experts",
      "model.top_k",       "model.d_ff",      "model.expert_type",    "model.dense_every", "model.tie_embeddings", "model.norm",
      "model.position", "model.shared_experts", "model.shared_d_ff",
      "model.router"};
  return names;
}

// Sets one key from its JSON value (what to_json wrote): the JSON text is a TOML value too.
void set_from_json(Config& c, const Key& key, const Json& value) {
  const toml::table parsed = toml::parse("v = " + value.dump());
  key.set(c, *parsed.get("v"));
}

void apply_file_and_overrides(Config& c, const std::optional<std::string>& file, const std::vector<std::string>& overrides);

// A resolved config as to_json writes it (config.json, a checkpoint's "config"); keys it lacks
// (an older version's file) keep their values.
void apply_json(Config& c, const Json& j) {
  for (const Key& k : keys()) {
    const auto dot = k.name.find('.');
    const std::string section = k.name.substr(0, dot), name = k.name.substr(dot + 1);
    if (j.contains(section) && j.at(section).contains(name)) set_from_json(c, k, j.at(section).at(name));
  }
}

}  // namespace

Config Config::load(const std::optional<std::string>& file, const std::vector<std::string>& overrides) {
  Config c;
  apply_file_and_overrides(c, file, overrides);
  return c;
}

Config Config::resume(const Json& stored, const std::optional<std::string>& file, const std::vector<std::string>& overrides,
                      std::vector<std::string>& changes) {
  Config before;
  apply_json(before, stored);
  Config after = before;
  apply_file_and_overrides(after, file, overrides);
  for (const Key& k : keys()) {
    const Json was = k.get(before), now = k.get(after);
    if (was == now) continue;
    const bool shape = std::find(shape_keys().begin(), shape_keys().end(), k.name) != shape_keys().end();
    MOERUN_CHECK(!shape, ConfigError,
                 "{} = {} in the checkpoint but {} was asked: a resumed run keeps the model's shape (the checkpoint's "
                 "tensors are its tensors); drop that --set/--config value, or start a new run",
                 k.name, was.dump(), now.dump());
    changes.push_back(fmt::format("{}: {} -> {}", k.name, was.dump(), now.dump()));
  }
  return after;
}

namespace {
void apply_file_and_overrides(Config& c, const std::optional<std::string>& file, const std::vector<std::string>& overrides) {
  if (file && file->ends_with(".json")) {  // a run directory's config.json
    std::ifstream in(*file);
    const Json j = Json::parse(in, nullptr, /*allow_exceptions=*/false);
    MOERUN_CHECK(!j.is_discarded() && j.is_object(), ConfigError,
                 "cannot parse config file '{}' as JSON (a run directory's config.json); TOML files end in .toml", *file);
    apply_json(c, j);
  } else if (file) {
    toml::table table;
    try {
      table = toml::parse_file(*file);
    } catch (const toml::parse_error& e) {
      const auto& at = e.source().begin;
      MOERUN_THROW(ConfigError, "cannot parse config file '{}' at line {}, column {}: {}", *file, at.line, at.column,
                   e.description());
    }
    apply_table(c, table, "", "in " + *file);
  }
  for (const std::string& o : overrides) {
    const auto eq = o.find('=');
    MOERUN_CHECK(eq != std::string::npos && eq > 0, ConfigError,
                 "--set '{}' must look like section.key=value (e.g. --set model.d_model=256)", o);
    const std::string name = o.substr(0, eq), text = o.substr(eq + 1);
    const Key* key = find_key(name);
    if (key == nullptr) unknown_key(name, "from --set");
    // The value is TOML (numbers, booleans, "strings", [arrays]); a bare word is a string.
    toml::table parsed;
    try {
      parsed = toml::parse("v = " + text);
    } catch (const toml::parse_error&) {
      parsed = toml::table{{"v", text}};
    }
    key->set(c, *parsed.get("v"));
  }
  c.model.validate();
}
}  // namespace

std::vector<std::string> Config::notes() const {
  std::vector<std::string> notes;
  if (balance.policy != BalancePolicy::None && parallel.ep == 1)
    notes.push_back("balance.policy has no effect with parallel.ep = 1 (every rank holds every expert)");
  if (model.router_zipf > 0)
    notes.push_back(fmt::format("bench.router_zipf = {} biases the router (benchmark setting, changes the math)",
                                model.router_zipf));
  if (model.router_balanced)
    notes.push_back("bench.router_balanced = true forces balanced routing (benchmark setting, changes the math)");
  if (model.balance == Balance::AuxFree && model.aux_loss_coef > 0)
    notes.push_back(fmt::format("model.balance = aux_free with model.aux_loss_coef = {}: the selection bias balances and the "
                                "sequence-wise aux loss is added too (DeepSeek-V3 uses 1e-4); set model.aux_loss_coef = 0 "
                                "for the bias alone", model.aux_loss_coef));
  if (model.balance == Balance::None && model.aux_loss_coef > 0)
    notes.push_back(fmt::format("model.balance = none ignores model.aux_loss_coef = {}", model.aux_loss_coef));
  return notes;
}

void Config::validate(int world_size) const {
  model.validate();
  const bool bytes = data.source == "synthetic" ||
                     parse_token_file_format(data.format, data.source) == TokenFileFormat::Text;
  MOERUN_CHECK(!bytes || model.vocab_size >= vocab::kSize, ConfigError,
               "model.vocab_size = {} is smaller than the byte vocabulary ({}: 256 bytes, pad, bos, eos) that {} needs; "
               "set model.vocab_size >= {}, or train on a token file (.u16 / .u32)",
               model.vocab_size, vocab::kSize,
               data.source == "synthetic" ? std::string("data.source = \"synthetic\"") : "the text file " + data.source,
               vocab::kSize);
  parse_memory_limit(runtime.memory_limit);  // a malformed size fails here, before any work
  auto at_least = [](std::int64_t v, std::int64_t lo, const char* key, const char* why) {
    MOERUN_CHECK(v >= lo, ConfigError, "{} = {} must be >= {} ({})", key, v, lo, why);
  };
  at_least(train.steps, 1, "train.steps", "at least one optimizer step");
  MOERUN_CHECK(data.valid_fraction > 0.0 && data.valid_fraction < 1.0, ConfigError,
               "data.valid_fraction = {} must be in (0, 1): the end of data.source held out for the validation loss",
               data.valid_fraction);
  MOERUN_CHECK(data.valid_source.empty() || data.source != "synthetic", ConfigError,
               "data.valid_source = '{}' needs a token file as data.source; the synthetic tasks make their own "
               "held-out data", data.valid_source);
  at_least(train.global_batch, 1, "train.global_batch", "sequences per step");
  at_least(train.micro_batch, 1, "train.micro_batch", "sequences per forward pass");
  at_least(train.warmup_steps, 0, "train.warmup_steps", "0 disables warm-up");
  at_least(eval.every, 0, "eval.every", "0 = only at the end");
  at_least(eval.examples, 0, "eval.examples", "0 skips exact-match evaluation");
  at_least(eval.heldout_batches, 0, "eval.heldout_batches", "0 skips held-out loss");
  at_least(parallel.ranks_per_node, 0, "parallel.ranks_per_node", "0 (detect) or the ranks of one node");
  at_least(log.every, 1, "log.every", "a progress line every n steps");
  at_least(runtime.threads, 0, "runtime.threads", "0 = automatic");
  MOERUN_CHECK(runtime.collective_timeout >= 0.0, ConfigError,
               "runtime.collective_timeout = {} must be >= 0 (seconds; 0 = off)", runtime.collective_timeout);
  MOERUN_CHECK(log.progress == "auto" || log.progress == "redraw" || log.progress == "lines", ConfigError,
               "log.progress = '{}' is not one of: auto, redraw, lines", log.progress);
  at_least(checkpoint.every, 0, "checkpoint.every", "0 = only at the end and on signals");
  MOERUN_CHECK(train.max_loss_ratio == 0.0 || train.max_loss_ratio > 1.0, ConfigError,
               "train.max_loss_ratio = {} must be 0 (off) or above 1 (a multiple of the recent median loss)",
               train.max_loss_ratio);
  at_least(checkpoint.keep, 1, "checkpoint.keep", "the newest checkpoint is always kept");
  at_least(balance.interval, 1, "balance.interval", "steps between decisions");
  at_least(balance.window, 1, "balance.window", "steps of the moving average");
  MOERUN_CHECK(balance.min_gain >= 0.0 && balance.min_gain < 1.0, ConfigError,
               "balance.min_gain = {} must be in [0, 1)", balance.min_gain);
  MOERUN_CHECK(model.block_size <= train.micro_batch * model.seq_len, ConfigError,
               "moe.block_size = {} is larger than the {} tokens of a micro-batch (train.micro_batch = {} x "
               "model.seq_len = {}): a block would always be mostly padding; choose at most {}",
               model.block_size, train.micro_batch * model.seq_len, train.micro_batch, model.seq_len,
               train.micro_batch * model.seq_len);
  at_least(balance.max_experts_per_rank, 0, "balance.max_experts_per_rank",
           "0 = experts / ep + 1, or experts / ep under moe.shapes = static");
  if (balance.max_experts_per_rank > 0 && (balance.policy != BalancePolicy::None || model.static_shapes()) &&
      parallel.ep > 1) {
    MOERUN_CHECK(balance.max_experts_per_rank * parallel.ep >= model.experts, ConfigError,
                 "balance.max_experts_per_rank = {} x parallel.ep = {} leaves no room for the {} experts; allow at "
                 "least {} per rank",
                 balance.max_experts_per_rank, parallel.ep, model.experts, (model.experts + parallel.ep - 1) / parallel.ep);
  }
  MOERUN_CHECK(model.router_zipf >= 0.0, ConfigError, "bench.router_zipf = {} must be >= 0", model.router_zipf);
  MOERUN_CHECK(!(model.router_balanced && model.router_zipf > 0.0), ConfigError,
               "bench.router_balanced = true and bench.router_zipf = {} contradict each other (forced balance vs a "
               "skew); set one of them", model.router_zipf);
  MOERUN_CHECK(parallel.bucket_mb > 0.0, ConfigError, "parallel.bucket_mb = {} must be > 0", parallel.bucket_mb);
  MOERUN_CHECK(parallel.leader_exchange_kib >= 0.0, ConfigError,
               "parallel.leader_exchange_kib = {} must be >= 0 (0: never the node-leader exchange under auto)",
               parallel.leader_exchange_kib);
  MOERUN_CHECK(train.lr > 0.0, ConfigError, "train.lr = {} must be > 0", train.lr);
  MOERUN_CHECK(train.min_lr_ratio >= 0.0 && train.min_lr_ratio <= 1.0, ConfigError,
               "train.min_lr_ratio = {} must be in [0, 1]", train.min_lr_ratio);
  MOERUN_CHECK(train.beta1 >= 0.0 && train.beta1 < 1.0 && train.beta2 >= 0.0 && train.beta2 < 1.0, ConfigError,
               "train.beta1 = {} and train.beta2 = {} must be in [0, 1)", train.beta1, train.beta2);
  MOERUN_CHECK(train.weight_decay >= 0.0 && train.grad_clip >= 0.0 && train.epsilon > 0.0, ConfigError,
               "train.weight_decay ({}) and train.grad_clip ({}) must be >= 0 and train.epsilon ({}) > 0",
               train.weight_decay, train.grad_clip, train.epsilon);
  // Parallel layout: the world splits into dp x ep; experts are sharded over ep.
  MOERUN_CHECK(parallel.ep >= 1 && world_size % parallel.ep == 0, ConfigError,
               "parallel.ep = {} does not divide the world size {} (ranks = dp x ep); run with a multiple of {} ranks "
               "or choose ep among the divisors of {}",
               parallel.ep, world_size, parallel.ep, world_size);
  MOERUN_CHECK(model.experts % parallel.ep == 0, ConfigError,
               "model.experts = {} is not divisible by parallel.ep = {} (each rank of an expert-parallel group holds "
               "experts / ep experts); choose ep among the divisors of {}",
               model.experts, parallel.ep, model.experts);
  MOERUN_CHECK(train.global_batch % (train.micro_batch * world_size) == 0, ConfigError,
               "train.global_batch = {} is not a multiple of train.micro_batch ({}) x ranks ({}): every rank reads "
               "its own share and must run the same number of micro-batches; use a global_batch multiple of {}",
               train.global_batch, train.micro_batch, world_size, train.micro_batch * world_size);
}

Json Config::to_json() const {
  Json j = Json::object();
  for (const Key& k : keys()) {
    const auto dot = k.name.find('.');
    j[k.name.substr(0, dot)][k.name.substr(dot + 1)] = k.get(*this);
  }
  return j;
}

std::string Config::reference_markdown() {
  const Config defaults;
  std::string out = "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const Key& k : keys()) out += fmt::format("| `{}` | {} | `{}` | {} |\n", k.name, k.type, k.get(defaults).dump(), k.help);
  return out;
}

}  // namespace moerun
