// The vocabulary-sized work of one micro-batch at 32k-128k tokens of vocabulary: the LM head
// (logits = h E^T, and its two backward products), the cross-entropy forward and backward, and
// the embedding gradient (scatter-add of token rows). Each case prints ms per call and the
// cross-entropy's and embedding gradient's share of the head's matmul time, measured back to back.
//
//   bench_vocab [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <chrono>
#include <random>

#include "kernels/index.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "runtime/cpu/cpu_device.h"

namespace moerun {
namespace {

CpuDevice& device() {
  static CpuDevice dev;
  return dev;
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// tokens = 2048 (a micro-batch of 8 x 256), d = 512; vocab from the argument.
void BM_VocabWork(benchmark::State& state) {
  const std::int64_t n = 2048, d = 512, v = state.range(0);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> hv(static_cast<std::size_t>(n * d)), ev(static_cast<std::size_t>(v * d));
  for (float& x : hv) x = normal(rng);
  for (float& x : ev) x = 0.02f * normal(rng);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  for (auto& l : labels) l = static_cast<std::int32_t>(rng() % static_cast<std::uint32_t>(v));
  Tensor h = Tensor::from_host(device(), {n, d}, hv), table = Tensor::from_host(device(), {v, d}, ev);
  Tensor y = Tensor::from_host(device(), {n}, labels), logits(device(), {n, v}), probs(device(), {n, v}), loss(device(), {2});
  Tensor dh(device(), {n, d}), dtable = Tensor::zeros(device(), {v, d});
  double t_head = 0, t_ce = 0, t_embed = 0;
  for (auto _ : state) {
    auto t0 = Clock::now();
    kernels::matmul({.a = &h, .b = &table, .c = &logits, .transpose_b = true});
    t_head += seconds_since(t0);
    t0 = Clock::now();
    CrossEntropyArgs ce{.logits = &logits, .labels = &y, .probs = &probs, .loss = &loss, .scale = 1.0f / float(n),
                        .dlogits = &logits};
    kernels::cross_entropy_forward(ce);
    kernels::cross_entropy_backward(ce);
    t_ce += seconds_since(t0);
    t0 = Clock::now();
    kernels::matmul({.a = &logits, .b = &table, .c = &dh});
    kernels::matmul({.a = &logits, .b = &h, .c = &dtable, .transpose_a = true, .accumulate = true});
    t_head += seconds_since(t0);
    t0 = Clock::now();
    kernels::scatter_add_rows({.src = &h, .index = &y, .dst = &dtable});  // the input embedding's gradient
    t_embed += seconds_since(t0);
    state.SetIterationTime(seconds_since(t0));
  }
  const double it = double(state.iterations());
  state.counters["head_ms"] = 1e3 * t_head / it;
  state.counters["ce_ms"] = 1e3 * t_ce / it;
  state.counters["embed_grad_ms"] = 1e3 * t_embed / it;
  state.counters["ce_share_of_head"] = t_ce / t_head;
}
BENCHMARK(BM_VocabWork)->Arg(259)->Arg(32000)->Arg(128000)->ArgName("vocab")->UseManualTime()
    ->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
}  // namespace moerun

BENCHMARK_MAIN();
