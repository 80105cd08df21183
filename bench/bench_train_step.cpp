// Whole training steps of the MoE transformer (one process): tokens/s, achieved GFLOP/s
// from an analytic FLOP count, the ratio to a matmul measured in the same run, and where the
// step's time goes per kernel family (KernelProfile).
//
//   bench_train_step [small|medium|finegrained] [steps] [fp32|bf16] [section.key=value ...]
// small = the default config; medium = d_model 512, d_ff 2048, 8 experts, top-2, seq 256;
// finegrained = medium's attention with 64 SwiGLU experts of d_ff 256, top-6, 2 shared experts
// (DeepSeek-MoE's shape). Further arguments are config overrides (model.vocab_size=32000).
// bf16 is train.precision = bf16; the line also prints the expert-shaped matmul's bf16/fp32
// rate ratio measured in the same run (the ceiling of the step's speed-up).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "kernels/matmul.h"
#include "parallel/process_group.h"
#include "runtime/kernel_profile.h"
#include "runtime/vocab.h"
#include "runtime/cpu/cpu_device.h"
#include "train/trainer.h"

using namespace moerun;

namespace {

// Training FLOPs per step: 3x the forward (forward, data gradient, weight gradient).
double step_flops(const Config& c, double kept_fraction) {
  const double d = double(c.model.d_model), t = double(c.model.seq_len), ff = double(c.model.d_ff);
  const double e = double(c.model.experts), k = double(c.model.top_k), v = double(c.model.vocab_size);
  const double ffn_matmuls = c.model.expert_type == ExpertType::SwiGlu ? 3.0 : 2.0;
  const double per_layer = 2 * d * 3 * d + 2 * d * d    // qkv and output projections
                           + 2 * 2 * t * d              // q k^T and probs v (full t x t computed)
                           + 2 * d * e                  // router
                           + ffn_matmuls * 2 * d * ff * k * kept_fraction  // experts on kept copies
                           + ffn_matmuls * 2 * d * double(c.model.shared_width());  // shared experts, every token
  const double forward_per_token = double(c.model.n_layers) * per_layer + 2 * d * v;
  return 3.0 * forward_per_token * double(c.train.global_batch) * t;
}

// GFLOP/s of one [tokens, d] x [d, ff] matmul, the expert FFN's shape, measured now.
double matmul_rate(Device& dev, std::int64_t tokens, std::int64_t d, std::int64_t ff, DType dtype) {
  Tensor a = Tensor::zeros(dev, {tokens, d}, dtype), b = Tensor::zeros(dev, {d, ff}, dtype), c(dev, {tokens, ff}, dtype);
  kernels::matmul({.a = &a, .b = &b, .c = &c});
  const int reps = 20;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) kernels::matmul({.a = &a, .b = &b, .c = &c});
  dev.synchronize();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * double(tokens * d * ff) * reps / s * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "small";
  const std::int64_t steps = argc > 2 ? std::atoll(argv[2]) : 10;
  const std::string precision = argc > 3 ? argv[3] : "fp32";
  std::vector<std::string> sets = {"eval.every=0", "eval.examples=0", "eval.heldout_batches=0"};
  if (which == "medium" || which == "finegrained") {
    for (const char* s : {"model.d_model=512", "model.d_ff=2048", "model.experts=8", "model.top_k=2", "model.seq_len=256",
                          "model.n_layers=4", "model.n_heads=8", "train.global_batch=16", "train.micro_batch=8"})
      sets.push_back(s);
  }
  if (which == "finegrained") {
    for (const char* s : {"model.experts=64", "model.top_k=6", "model.d_ff=256", "model.shared_experts=2",
                          "model.expert_type=\"swiglu\"", "model.capacity_factor=0"})
      sets.push_back(s);
  }
  sets.push_back("train.precision=\"" + precision + "\"");
  for (int i = 4; i < argc; ++i) sets.push_back(argv[i]);
  Config config = Config::load(std::nullopt, sets);
  config.train.steps = steps + 1;
  LocalGroup world;
  CpuDevice device;
  Trainer trainer(config, world, device, "");
  trainer.train_step(1);  // warm-up: primitives and memory blocks
  KernelProfile profile;
  device.set_profile(&profile);
  double seconds = 0.0, dropped = 0.0;
  for (std::int64_t s = 2; s <= steps + 1; ++s) {
    const StepResult r = trainer.train_step(s);
    seconds += r.step_ms / 1000.0;
    dropped += r.dropped_frac;
  }
  device.set_profile(nullptr);
  const double kept = 1.0 - dropped / double(steps);
  const double flops = step_flops(config, kept) * double(steps);
  const double tokens = double(config.train.global_batch * config.model.seq_len * steps);
  const double gflops = flops / seconds * 1e-9;
  const std::int64_t expert_rows = config.train.micro_batch * config.model.seq_len * config.model.top_k / config.model.experts;
  const double peak = matmul_rate(device, expert_rows, config.model.d_model, config.model.d_ff, config.model.compute_dtype);
  const double fp32_rate = matmul_rate(device, expert_rows, config.model.d_model, config.model.d_ff, DType::F32);
  const double bf16_rate = matmul_rate(device, expert_rows, config.model.d_model, config.model.d_ff, DType::BF16);
  fmt::print("config {} ({}, bf16 {}): d_model {} d_ff {} experts {} top-{} shared {} vocab {} seq {} layers {} global batch {} "
             "(micro {}), {} steps\n",
             which, precision, device.dtype_path(DType::BF16), config.model.d_model, config.model.d_ff, config.model.experts,
             config.model.top_k, config.model.shared_experts, config.model.vocab_size, config.model.seq_len,
             config.model.n_layers, config.train.global_batch, config.train.micro_batch, steps);
  fmt::print("step time {:.1f} ms | {:.0f} tokens/s | {:.1f} GFLOP/s achieved | expert-shaped matmul now {:.1f} GFLOP/s "
             "| ratio {:.2f} | kept copies {:.1f}%\n",
             1000 * seconds / double(steps), tokens / seconds, gflops, peak, gflops / peak, 100 * kept);
  fmt::print("expert-shaped matmul [{} x {}] x [{} x {}]: fp32 {:.1f} GFLOP/s, bf16 {:.1f} GFLOP/s, ratio {:.2f} (the ceiling "
             "of a bf16 step's speed-up)\n",
             expert_rows, config.model.d_model, config.model.d_model, config.model.d_ff, fp32_rate, bf16_rate,
             bf16_rate / fp32_rate);
  std::vector<std::pair<std::string, KernelTime>> rows(profile.entries().begin(), profile.entries().end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  double matmul_s = 0.0;
  fmt::print("{:<24} {:>8} {:>10} {:>8}\n", "kernel", "calls", "ms/step", "share");
  for (const auto& [name, t] : rows) {
    fmt::print("{:<24} {:>8} {:>10.2f} {:>7.1f}%\n", name, t.calls / steps, 1000 * t.seconds / double(steps),
               100 * t.seconds / seconds);
    if (name == "matmul" || name == "grouped_matmul") matmul_s += t.seconds;
  }
  const double attention_s = (profile.entries().contains("attention_forward") ? profile.entries().at("attention_forward").seconds : 0) +
                             (profile.entries().contains("attention_backward") ? profile.entries().at("attention_backward").seconds : 0);
  fmt::print("matmul + grouped_matmul: {:.1f}% of the step; with attention (batched matmuls + softmax): {:.1f}%; "
             "all kernels: {:.1f}%; outside kernels (routing bookkeeping, copies, host): {:.1f}%\n",
             100 * matmul_s / seconds, 100 * (matmul_s + attention_s) / seconds, 100 * profile.total_seconds() / seconds,
             100 * (1 - profile.total_seconds() / seconds));
  // Every FFN runs as a grouped matmul (routed experts, shared experts, dense blocks): their
  // FLOPs against one big matmul of the expert forward shape with all of a micro-batch's copies
  // as rows, measured now. model.shared_experts=0 leaves the routed experts alone.
  if (profile.entries().contains("grouped_matmul")) {
    const double ffn = config.model.expert_type == ExpertType::SwiGlu ? 3.0 : 2.0;
    const double d = double(config.model.d_model), ff = double(config.model.d_ff);
    const double tokens = double(config.train.global_batch * config.model.seq_len);
    double moe_layers = 0;
    for (std::int64_t l = 0; l < config.model.n_layers; ++l) moe_layers += config.model.is_moe_layer(l) ? 1 : 0;
    const double dense_layers = double(config.model.n_layers) - moe_layers;
    const double widths = moe_layers * (ff * double(config.model.top_k) * kept + double(config.model.shared_width())) +
                          dense_layers * ff;
    const double ffn_flops = 3.0 * ffn * 2.0 * d * widths * tokens;
    const double grouped_s = profile.entries().at("grouped_matmul").seconds / double(steps);
    const std::int64_t all_rows = config.train.micro_batch * config.model.seq_len * config.model.top_k;
    const double big = matmul_rate(device, all_rows, config.model.d_model, config.model.d_ff, config.model.compute_dtype);
    fmt::print("FFNs: {:.1f} GFLOP/s in grouped_matmul ({} experts, ~{} rows each per layer and micro-batch{}) against "
               "{:.1f} GFLOP/s for one [{} x {}] x [{} x {}] matmul: {:.2f} of it\n",
               ffn_flops / grouped_s * 1e-9, config.model.experts, all_rows / config.model.experts,
               config.model.shared_experts > 0 ? ", shared experts included" : "", big, all_rows, config.model.d_model,
               config.model.d_model, config.model.d_ff, ffn_flops / grouped_s * 1e-9 / big);
  }
  fmt::print("peak device memory {:.1f} MiB\n", double(device.memory_stats().peak_bytes) / (1 << 20));
  return 0;
}
