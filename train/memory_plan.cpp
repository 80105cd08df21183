#include "train/memory_plan.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "runtime/error.h"
#include "runtime/vocab.h"

namespace moerun {

namespace {

constexpr std::int64_t kFloat = 4;  // fp32 values and i32 indices

double mib(std::int64_t bytes) { return double(bytes) / (1024.0 * 1024.0); }

// Activation bytes of one micro-batch, given the token-copies this rank keeps (`kept`, sent
// by its tokens) and receives for its experts (`received`). Mirrors what the layers save.
// Each term is counted in the dtype the layer stores it in: fp32 for the residual stream,
// statistics, router, attention probabilities and logits; the compute dtype `a` (bytes per
// value: 4 in fp32, 2 in bf16) for what feeds a matmul or travels in the token exchange.
struct ActivationTerms {
  std::int64_t saved = 0;      // alive from the forward pass to the backward pass
  std::int64_t temporary = 0;  // the largest set of temporaries on top of `saved`
};

ActivationTerms activation_terms(const Config& c, double kept, double received, bool local_dispatch, Recompute recompute) {
  const ModelConfig& m = c.model;
  const double n = double(c.train.micro_batch * m.seq_len);  // tokens of one micro-batch
  const double d = double(m.d_model), ff = double(m.d_ff), e = double(m.experts), k = double(m.top_k);
  const double v = double(m.vocab_size);
  const double w = double(kFloat), a = double(dtype_size(m.compute_dtype));
  const double ffn_saved = (m.expert_type == ExpertType::SwiGlu ? 2.0 : 1.0);  // x W1 (and x W3) per row
  // Per block: residual stream x and x1 [n, d] (fp32); ln1(x), ln2(x1) [n, d] (compute); two
  // layer norms' mean and variance [n]; attention's qkv [n, 3d] and head outputs [n, d]
  // (compute) and probabilities [batch, heads, t, t] (fp32).
  const double block_common = w * (2 * n * d + 4 * n + double(c.train.micro_batch * m.n_heads * m.seq_len * m.seq_len)) +
                              a * (2 * n * d + 4 * n * d);
  // MoE: router probabilities [n, E], log-sum-exp [n], top-k index and gates [n, k]; per kept
  // copy its token, slot and gate (fp32 / i32); the copies' inputs [kept, d]; at the experts
  // the received inputs and outputs [received, d] and x W1 [received, ff]; the combined
  // outputs [kept, d] (compute dtype, as exchanged). A one-process dispatcher hands out views,
  // so inputs and outputs are not copied. recompute = moe drops x W1 (and x W3) at the
  // experts; backward recomputes them.
  const double expert_hidden = a * ffn_saved * received * ff;
  const double moe_kept_hidden = recompute == Recompute::Moe ? 0.0 : expert_hidden;
  // Shared experts: one dense FFN of width sw on every token, its hidden activations saved.
  const double sw = double(m.shared_width());
  const double shared_hidden = recompute == Recompute::Moe ? 0.0 : a * ffn_saved * n * sw;
  const double moe = w * (n * e + n + 2 * n * k + 3 * kept) +
                     a * (kept * d + (local_dispatch ? 0.0 : 2 * received * d) + received * d) + moe_kept_hidden +
                     shared_hidden;
  const double dense_ffn = a * ffn_saved * n * ff;
  double saved = w * 2 * n;  // token ids and targets
  double moe_layers = 0;
  double largest_block = 0;  // recompute = full: one block's activations, rebuilt in its backward
  for (std::int64_t l = 0; l < m.n_layers; ++l) {
    const bool is_moe = m.is_moe_layer(l);
    moe_layers += is_moe ? 1 : 0;
    const double block = block_common + (is_moe ? moe : dense_ffn);
    largest_block = std::max(largest_block, block);
    saved += recompute == Recompute::Full ? w * n * d : block;  // full keeps only each block's input
  }
  // The final norm's input (fp32) and output (compute) [n, d] and its statistics.
  saved += w * (n * d + 2 * n) + a * n * d;
  // Temporaries. At the loss: logits and probabilities [n, V] (fp32). In the last block's
  // backward (the logits, reused as their gradient, are still alive): the incoming gradient
  // [n, d] (fp32), the copies' gradients [kept, d] twice (fp32 for the gate gradient, compute
  // as exchanged), the experts' output gradients [received, d], the recomputed activation and
  // its gradient [received, ff] (SwiGLU: gate and up gradients too), and the experts' input
  // gradients [received, d] (compute).
  const double at_loss = w * (2 * n * v + 2 * n * d);
  const double ffn_backward = (m.expert_type == ExpertType::SwiGlu ? 4.0 : 2.0);
  const double moe_backward = w * (n * v + n * d + kept * d + kept) +
                              std::max(a * (kept * d + 2 * received * d + ffn_backward * received * ff) +
                                           (recompute == Recompute::Moe ? expert_hidden : 0.0),
                                       a * (ffn_backward * n * sw + n * d) +
                                           (recompute == Recompute::Moe ? a * ffn_saved * n * sw : 0.0));
  const double dense_backward = w * (n * v + n * d) + a * (ffn_backward * n * ff + 2 * n * d);
  const double in_backward = (moe_layers > 0 ? moe_backward : dense_backward) +
                             (recompute == Recompute::Full ? largest_block : 0.0);
  return {static_cast<std::int64_t>(saved), static_cast<std::int64_t>(std::max(at_loss, in_backward))};
}

}  // namespace

MemoryEstimate estimate_memory(const Config& c, int world_size, bool staged_comm) {
  const ModelConfig& m = c.model;
  MemoryEstimate est;
  est.world_size = world_size;
  const std::int64_t ep = c.parallel.ep;
  est.experts_per_rank = m.experts / ep;
  const std::int64_t d = m.d_model, ff = m.d_ff, v = m.vocab_size;
  const std::int64_t matrices = m.expert_type == ExpertType::SwiGlu ? 3 : 2;
  // Parameters, as the layers register them.
  const std::int64_t norm = m.norm == NormKind::LayerNorm ? 2 * d : d;  // scale (and shift)
  const std::int64_t positions = m.position == PositionKind::Learned ? m.seq_len * d : 0;
  std::int64_t dense = v * d + positions + norm;  // embeddings, final norm
  if (!m.tie_embeddings) dense += v * d;                 // separate LM head
  std::int64_t experts = 0;
  for (std::int64_t l = 0; l < m.n_layers; ++l) {
    dense += 2 * norm + 4 * d * d + d;  // two norms, w_qkv, w_out, b_out
    if (m.is_moe_layer(l)) {
      dense += d * m.experts + matrices * d * m.shared_width();  // router, shared experts
      experts += est.experts_per_rank * matrices * d * ff;
    } else {
      dense += matrices * d * ff;
    }
  }
  est.dense_parameters = dense;
  est.expert_parameters = experts;
  est.parameters = kFloat * (dense + experts);
  // Mixed precision: a compute-dtype copy of every matrix (all but norms and biases).
  if (m.compute_dtype != DType::F32) {
    const std::int64_t vectors = norm + m.n_layers * (2 * norm + d);  // final norm; per block two norms and b_out
    est.compute_copies = static_cast<std::int64_t>(dtype_size(m.compute_dtype)) * (dense + experts - vectors);
  }
  est.gradients = est.parameters;      // one gradient per parameter, in the sync buckets
  // parallel.grad_reduce_dtype = bf16: a bf16 copy of every bucket that is reduced (dense over
  // the world; experts over their expert-data-parallel copies).
  const std::int64_t dp = world_size / ep, wire = dtype_size(c.parallel.grad_reduce_dtype);
  if (c.parallel.grad_reduce_dtype != DType::F32)
    est.gradients += wire * ((world_size > 1 ? dense : 0) + (dp > 1 ? experts : 0));
  est.optimizer = 2 * est.parameters;  // AdamW m and v
  if (c.train.shard_optimizer) {
    // ZeRO-1: dense moments split over the world, an expert's over its expert-data-parallel
    // copies (dp = world / ep); the split follows rows, so this is the mean share.
    est.optimizer = 2 * kFloat * (dense / world_size + experts / dp);
  }
  // Token-copies of one micro-batch: n * top_k, or at most the capacity of every expert.
  const std::int64_t n = c.train.micro_batch * m.seq_len;
  const double capacity_total = m.capacity_factor > 0 ? double(m.capacity(n)) * double(m.experts) : 1e300;
  const double kept = std::min(double(n * m.top_k), capacity_total);
  // Balanced routing: a rank receives, from each of the ep ranks, the share of its experts.
  const double received = kept * double(est.experts_per_rank) / double(m.experts) * double(ep);
  const bool local = ep == 1;
  const Recompute recompute = c.train.recompute;
  for (Recompute r : {Recompute::None, Recompute::Moe, Recompute::Full}) {
    const ActivationTerms t = activation_terms(c, kept, received, local, r);
    est.activations_with[static_cast<std::size_t>(r)] = t.saved + t.temporary;
    if (r != recompute) continue;
    est.activations = t.saved;
    est.temporaries = t.temporary;
  }
  est.recompute = recompute;
  est.precision = m.compute_dtype;
  est.shard_optimizer = c.train.shard_optimizer;
  if (staged_comm) {
    // HostAccess copies of a gradient bucket, and of one exchange's send and receive rows.
    const auto bucket = static_cast<std::int64_t>(c.parallel.bucket_mb * 1024 * 1024);
    est.communication = std::min(bucket, est.gradients) +
                        static_cast<std::int64_t>(double(dtype_size(m.compute_dtype)) * 2 * (kept + received) * double(d));
  }
  est.peak = est.persistent() + est.activations + est.temporaries;
  // Bound: every copy this rank can be sent arrives (capacity reached on each of its experts
  // from every source, or dropless: every source sends it all of its copies).
  const double received_bound = m.capacity_factor > 0
                                    ? double(m.capacity(n)) * double(est.experts_per_rank) * double(ep)
                                    : kept * double(ep);
  const ActivationTerms worst = activation_terms(c, kept, received_bound, local, recompute);
  est.peak_bound = est.persistent() + worst.saved + worst.temporary;
  return est;
}

nlohmann::json MemoryEstimate::to_json() const {
  return {{"world_size", world_size}, {"experts_per_rank", experts_per_rank}, {"parameters", parameters},
          {"compute_copies", compute_copies}, {"precision", dtype_name(precision)},
          {"gradients", gradients}, {"optimizer", optimizer}, {"activations", activations},
          {"temporaries", temporaries}, {"communication", communication}, {"peak", peak}, {"peak_bound", peak_bound},
          {"recompute", recompute_name(recompute)}, {"shard_optimizer", shard_optimizer},
          {"activations_and_temporaries_by_recompute",
           {{"none", activations_with[0]}, {"moe", activations_with[1]}, {"full", activations_with[2]}}}};
}

std::string MemoryEstimate::table() const {
  std::string s;
  auto line = [&](const char* what, std::int64_t bytes, const char* note) {
    s += fmt::format("  {:<34} {:>10.1f} MiB  {}\n", what, mib(bytes), note);
  };
  line("parameters", parameters, fmt::format("({} experts per MoE layer on each rank)", experts_per_rank).c_str());
  if (compute_copies > 0) line("compute copies of the weights", compute_copies, "(bf16 matrices the matmuls read)");
  line("gradients", gradients, "");
  line("optimizer moments (AdamW m, v)", optimizer, shard_optimizer ? "(ZeRO-1: this rank's share)" : "");
  line("activations (one micro-batch)", activations,
       fmt::format("saved by forward for backward (train.recompute = {}, precision {})", recompute_name(recompute),
                   dtype_name(precision)).c_str());
  line("temporaries", temporaries, "largest transient set: loss or last block's backward");
  for (Recompute r : {Recompute::None, Recompute::Moe, Recompute::Full}) {
    line(fmt::format("  activations + temporaries, {}", recompute_name(r)).c_str(), activations_with[static_cast<std::size_t>(r)],
         r == recompute ? "(this run)" : fmt::format("(--set train.recompute={})", recompute_name(r)).c_str());
  }
  line("communication staging", communication, communication == 0 ? "(MPI reads device memory directly)" : "");
  line("peak, estimated", peak, "balanced routing");
  line("peak, bound", peak_bound, "routing at the capacity limit (dropless: every copy to one rank)");
  return s;
}

std::int64_t parse_memory_limit(const std::string& text, int ranks_per_node) {
  std::string t;
  for (char ch : text)
    if (!std::isspace(static_cast<unsigned char>(ch))) t += ch;
  if (t.empty() || t == "0") return 0;
  if (t == "auto") {
    const double ram = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
    return static_cast<std::int64_t>(kAutoMemoryShare * ram / double(std::max(1, ranks_per_node)));
  }
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(t, &used);
  } catch (const std::exception&) {
    MOERUN_THROW(ConfigError, "runtime.memory_limit = '{}' is not a size: use bytes, KiB, MiB, GiB or a percentage "
                 "of RAM such as \"80%\" (0 = no limit)", text);
  }
  const std::string unit = t.substr(used);
  double bytes = 0;
  if (unit == "%") {
    const double ram = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
    bytes = ram * value / 100.0;
  } else if (unit.empty() || unit == "B") {
    bytes = value;
  } else if (unit == "KiB" || unit == "K") {
    bytes = value * 1024.0;
  } else if (unit == "MiB" || unit == "M") {
    bytes = value * 1024.0 * 1024.0;
  } else if (unit == "GiB" || unit == "G") {
    bytes = value * 1024.0 * 1024.0 * 1024.0;
  } else {
    MOERUN_THROW(ConfigError, "runtime.memory_limit = '{}': unknown unit '{}'; use B, KiB, MiB, GiB or %", text, unit);
  }
  MOERUN_CHECK(bytes >= 0, ConfigError, "runtime.memory_limit = '{}' is negative", text);
  return static_cast<std::int64_t>(bytes);
}

MemoryEstimate checked_memory_estimate(const Config& config, int world_size, bool staged_comm, int ranks_per_node) {
  const MemoryEstimate est = estimate_memory(config, world_size, staged_comm);
  const std::int64_t limit = parse_memory_limit(config.runtime.memory_limit, ranks_per_node);
  if (limit == 0 || est.peak <= limit) return est;
  // What would fit: more expert parallelism, recomputation, bf16, optimizer sharding, or smaller
  // micro-batches (more accumulation). Each option is the config with one key changed.
  std::string options;
  auto offer = [&](const std::string& set, const auto& change) {
    Config other = config;
    change(other);
    const std::int64_t peak = estimate_memory(other, world_size, staged_comm).peak;
    options += fmt::format("\n  --set {}: {:.1f} MiB{}", set, mib(peak), peak <= limit ? " (fits)" : "");
    return peak <= limit;
  };
  for (std::int64_t ep = config.parallel.ep * 2; ep <= world_size; ep *= 2) {
    if (world_size % ep != 0 || config.model.experts % ep != 0) continue;
    offer(fmt::format("parallel.ep={}", ep), [&](Config& o) { o.parallel.ep = ep; });
  }
  for (const Recompute mode : {Recompute::Moe, Recompute::Full}) {
    if (config.train.recompute != mode)
      offer(fmt::format("train.recompute={}", recompute_name(mode)), [&](Config& o) { o.train.recompute = mode; });
  }
  if (config.model.compute_dtype == DType::F32)
    offer("train.precision=bf16", [](Config& o) { o.model.compute_dtype = DType::BF16; });
  if (!config.train.shard_optimizer && world_size > 1)
    offer("train.shard_optimizer=true", [](Config& o) { o.train.shard_optimizer = true; });
  for (std::int64_t mb = config.train.micro_batch / 2; mb >= 1; mb /= 2) {
    if (config.train.global_batch % (mb * world_size) != 0) continue;
    if (offer(fmt::format("train.micro_batch={}", mb), [&](Config& o) { o.train.micro_batch = mb; })) break;
  }
  MOERUN_THROW(ConfigError,
               "[memory] the estimated peak of {:.1f} MiB per rank exceeds runtime.memory_limit = {} ({:.1f} MiB{}); "
               "nothing was allocated. Estimate (moerun --dry-run shows it for any world size):\n{}Options:{}",
               mib(est.peak), config.runtime.memory_limit, mib(limit),
               config.runtime.memory_limit == "auto"
                   ? fmt::format(": {:.0f}% of this node's memory shared by {} rank(s); \"0\" turns the check off",
                                 100 * kAutoMemoryShare, ranks_per_node)
                   : "",
               est.table(),
               options.empty() ? "\n  more ranks with a larger parallel.ep, or a smaller model" : options);
}

}  // namespace moerun
