#include "sim/calibrate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <functional>

#include "kernels/matmul.h"
#include "parallel/collective_cost.h"
#include "kernels/attention.h"
#include "kernels/norm.h"
#include "kernels/optimizer.h"
#include "runtime/tensor.h"

namespace moerun::sim {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kColdBytes = 64.0 * 1024 * 1024;  // more than a last-level cache holds

// Seconds of one call: the median of at least 5 after a warm-up (and of ~20 ms measured), the
// rate a kernel keeps up in training rather than its best run. call(i) runs on the i-th of the
// caller's buffer sets, so that successive calls do not find their operands in cache: a
// training step streams through many tensors, and a GEMM repeated on the same ones would run
// from the last-level cache.
double time_call(Device& device, const std::function<void(int)>& call) {
  call(0);
  device.synchronize();
  std::vector<double> times;
  double spent = 0.0;
  for (int i = 0; i < 5 || (spent < 0.02 && i < 200); ++i) {
    const auto t = Clock::now();
    call(i + 1);
    device.synchronize();
    times.push_back(std::chrono::duration<double>(Clock::now() - t).count());
    spent += times.back();
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// The median over ranks of each value (every rank measured at once), known to all.
std::vector<double> median_over_ranks(ProcessGroup& world, const std::vector<double>& mine) {
  const auto n = mine.size(), p = static_cast<std::size_t>(world.size());
  std::vector<double> all(n * p);
  world.all_gather(std::span<const double>(mine), std::span<double>(all));
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<double> v;
    for (std::size_t r = 0; r < p; ++r) v.push_back(all[r * n + i]);
    std::sort(v.begin(), v.end());
    out[i] = p % 2 ? v[p / 2] : 0.5 * (v[p / 2 - 1] + v[p / 2]);
  }
  return out;
}

RateTable gemm_table(Device& device, DType dtype, GemmRole role, bool quick) {
  RateTable t;
  t.rows = quick ? std::vector<double>{16, 256, 2048} : std::vector<double>{16, 64, 256, 1024, 4096};
  t.cols = quick ? std::vector<double>{256, 1024} : std::vector<double>{128, 512, 2048};
  t.inner = t.cols;
  for (double m : t.rows)
    for (double n : t.cols)
      for (double k : t.inner) {
        const auto M = static_cast<std::int64_t>(m), N = static_cast<std::int64_t>(n), K = static_cast<std::int64_t>(k);
        // As the layers call them: the weight gradient accumulates into the fp32 gradient.
        const bool wgrad = role == GemmRole::WeightGrad, dgrad = role == GemmRole::DataGrad;
        const double set_bytes = double(dtype_size(dtype)) * (m * k + k * n) + 4.0 * m * n;
        const int sets = std::clamp(static_cast<int>(std::ceil(kColdBytes / set_bytes)), 1, 16);
        std::vector<Tensor> as, bs, cs;
        for (int i = 0; i < sets; ++i) {
          as.push_back(Tensor::zeros(device, wgrad ? Shape{K, M} : Shape{M, K}, dtype));
          bs.push_back(Tensor::zeros(device, dgrad ? Shape{N, K} : Shape{K, N}, dtype));
          cs.push_back(Tensor::zeros(device, {M, N}, wgrad ? DType::F32 : dtype));
        }
        const double s = time_call(device, [&](int i) {
          const auto j = static_cast<std::size_t>(i % sets);
          kernels::matmul({.a = &as[j], .b = &bs[j], .c = &cs[j], .transpose_a = wgrad, .transpose_b = dgrad, .accumulate = wgrad});
        });
        t.gflops.push_back(2.0 * m * n * k / s * 1e-9);
      }
  return t;
}

RateTable attention_table(Device& device, DType dtype, bool quick) {
  RateTable t;
  t.rows = quick ? std::vector<double>{64, 256} : std::vector<double>{64, 128, 256, 512, 1024};
  const std::int64_t heads = 8, head_dim = 64, d = heads * head_dim;
  for (double seq : t.rows) {
    const auto s = static_cast<std::int64_t>(seq), b = std::max<std::int64_t>(1, 2048 / s);
    Tensor qkv = Tensor::zeros(device, {b * s, 3 * d}, dtype), dout = Tensor::zeros(device, {b * s, d}, dtype);
    Tensor probs(device, {b, heads, s, s}), out(device, {b * s, d}, dtype), dqkv(device, {b * s, 3 * d}, dtype);
    const AttentionArgs args{.batch = b, .seq = s, .heads = heads, .qkv = &qkv, .probs = &probs, .out = &out, .dout = &dout, .dqkv = &dqkv};
    const double fwd = time_call(device, [&](int) { kernels::attention_forward(args); });
    const double bwd = time_call(device, [&](int) { kernels::attention_backward(args); });
    const double flops = attention_flops(double(b), seq, double(heads), double(head_dim), false) +
                         attention_flops(double(b), seq, double(heads), double(head_dim), true);
    t.gflops.push_back(flops / (fwd + bwd) * 1e-9);
  }
  return t;
}

// alpha (us) and bandwidth (GB/s) by least squares over (bytes, seconds).
LinkFit fit_line(const std::vector<double>& bytes, const std::vector<double>& seconds) {
  const double n = double(bytes.size());
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) mx += bytes[i] / n, my += seconds[i] / n;
  double sxy = 0, sxx = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) sxy += (bytes[i] - mx) * (seconds[i] - my), sxx += (bytes[i] - mx) * (bytes[i] - mx);
  const double slope = sxx > 0 ? std::max(sxy / sxx, 1e-15) : 1e-15;
  return {.alpha_us = std::max(0.0, 1e6 * (my - slope * mx)), .gbps = 1e-9 / slope};
}

double timed_collective(ProcessGroup& world, const std::function<void()>& call) {
  return world.all_reduce_value(median_collective_seconds(world, 7, call), ReduceOp::Max);  // the slowest rank's median
}

Link measure_link(ProcessGroup& world, bool quick) {
  const auto p = static_cast<std::size_t>(world.size());
  std::vector<double> a2a_bytes, a2a_seconds, ar_bytes, ar_seconds;
  for (std::int64_t per_peer : quick ? std::vector<std::int64_t>{1 << 10, 1 << 18} : std::vector<std::int64_t>{1 << 10, 1 << 14, 1 << 17, 1 << 19, 1 << 20}) {
    std::vector<float> send(p * static_cast<std::size_t>(per_peer), 1.0f), recv(send.size());
    std::vector<std::int64_t> counts(p, per_peer), displs(p);
    for (std::size_t r = 0; r < p; ++r) displs[r] = static_cast<std::int64_t>(r) * per_peer;
    a2a_seconds.push_back(timed_collective(world, [&] { world.all_to_all_v(send, counts, displs, recv, counts, displs); }));
    a2a_bytes.push_back(4.0 * double(per_peer) * double(p - 1));  // what one rank sends to others
  }
  for (std::int64_t n : quick ? std::vector<std::int64_t>{1 << 10, 1 << 20} : std::vector<std::int64_t>{1 << 10, 1 << 16, 1 << 19, 1 << 21, 1 << 22}) {
    std::vector<float> data(static_cast<std::size_t>(n), 1.0f);
    ar_seconds.push_back(timed_collective(world, [&] { world.all_reduce(std::span<float>(data)); }));
    ar_bytes.push_back(2.0 * double(p - 1) / double(p) * 4.0 * double(n));
  }
  // Alphas per message: an all-to-all sends p - 1 of them, a ring all-reduce 2 (p - 1) in sequence.
  LinkFit a2a = fit_line(a2a_bytes, a2a_seconds), ar = fit_line(ar_bytes, ar_seconds);
  a2a.alpha_us /= double(p - 1);
  ar.alpha_us /= 2.0 * double(p - 1);
  return {.all_to_all = a2a, .all_reduce = ar};
}

// Share of a large all-reduce that completes while the rank computes: run it alone, the
// compute alone, then both (start, compute, wait).
double measure_overlap(Device& device, ProcessGroup& world) {
  std::vector<float> data(static_cast<std::size_t>(1 << 22), 1.0f);
  Tensor a = Tensor::zeros(device, {1024, 1024}), b = Tensor::zeros(device, {1024, 1024}), c(device, {1024, 1024});
  const double reduce = timed_collective(world, [&] { world.all_reduce(std::span<float>(data)); });
  const double one = time_call(device, [&](int) { kernels::matmul({.a = &a, .b = &b, .c = &c}); });
  const int calls = std::max(1, static_cast<int>(reduce / one));
  const auto compute = [&] {
    for (int i = 0; i < calls; ++i) kernels::matmul({.a = &a, .b = &b, .c = &c});
    device.synchronize();
  };
  const double alone = timed_collective(world, compute);
  const double both = timed_collective(world, [&] {
    auto request = world.all_reduce_async(std::span<float>(data), ReduceOp::Sum);
    compute();
    request->wait();
  });
  return std::clamp((reduce + alone - both) / reduce, 0.0, 1.0);
}

}  // namespace

Hardware calibrate(Device& device, ProcessGroup& world, const CalibrateOptions& options) {
  Hardware hw;
  hw.name = options.name;
  hw.source = "measured";
  hw.description = options.description;
  hw.ranks_per_node = world.size();
  for (const auto& [dtype, tables] : {std::pair{DType::F32, &hw.gemm_f32}, std::pair{DType::BF16, &hw.gemm_bf16}}) {
    tables->forward = gemm_table(device, dtype, GemmRole::Forward, options.quick);
    tables->data_grad = gemm_table(device, dtype, GemmRole::DataGrad, options.quick);
    tables->weight_grad = gemm_table(device, dtype, GemmRole::WeightGrad, options.quick);
  }
  hw.attention_f32 = attention_table(device, DType::F32, options.quick);
  hw.attention_bf16 = attention_table(device, DType::BF16, options.quick);
  {
    Tensor a = Tensor::zeros(device, {1, 8}), b = Tensor::zeros(device, {8, 8}), c(device, {1, 8});
    hw.kernel_overhead_us = 1e6 * time_call(device, [&](int) { kernels::matmul({.a = &a, .b = &b, .c = &c}); });
  }
  {
    const std::int64_t rows = 4096, d = 512;
    Tensor x = Tensor::zeros(device, {rows, d}), g = Tensor::zeros(device, {d}), bt = Tensor::zeros(device, {d}), y(device, {rows, d}),
           mean(device, {rows}), var(device, {rows}), dy = Tensor::zeros(device, {rows, d}), dx(device, {rows, d}),
           dg = Tensor::zeros(device, {d}), db = Tensor::zeros(device, {d});
    const LayerNormArgs args{.x = &x, .gamma = &g, .beta = &bt, .mean = &mean, .variance = &var, .y = &y, .dy = &dy, .dx = &dx,
                             .dgamma = &dg, .dbeta = &db};
    const double s = time_call(device, [&](int) { kernels::layer_norm_forward(args); kernels::layer_norm_backward(args); });
    hw.elementwise_gbps = 6.0 * double(rows * d) * 4.0 / s * 1e-9;
  }
  {
    const std::int64_t n = 1 << 22;
    Tensor p = Tensor::zeros(device, {n}), g = Tensor::zeros(device, {n}), m = Tensor::zeros(device, {n}), v = Tensor::zeros(device, {n});
    const double s = time_call(device, [&](int) { kernels::adamw_update({.param = &p, .grad = &g, .m = &m, .v = &v}); });
    hw.optimizer_gbps = 7.0 * 4.0 * double(n) / s * 1e-9;
  }
  // Kernel rates: the median over ranks, so every rank writes the same file.
  std::vector<double> mine = {hw.kernel_overhead_us, hw.elementwise_gbps, hw.optimizer_gbps};
  const std::vector<RateTable*> tables = {&hw.gemm_f32.forward,     &hw.gemm_f32.data_grad,  &hw.gemm_f32.weight_grad,
                                          &hw.gemm_bf16.forward,    &hw.gemm_bf16.data_grad, &hw.gemm_bf16.weight_grad,
                                          &hw.attention_f32,        &hw.attention_bf16};
  for (RateTable* t : tables) mine.insert(mine.end(), t->gflops.begin(), t->gflops.end());
  const std::vector<double> agreed = median_over_ranks(world, mine);
  std::size_t at = 0;
  hw.kernel_overhead_us = agreed[at++];
  hw.elementwise_gbps = agreed[at++];
  hw.optimizer_gbps = agreed[at++];
  for (RateTable* t : tables)
    for (double& g : t->gflops) g = agreed[at++];

  if (world.size() > 1) {
    hw.intra_node = measure_link(world, options.quick);
    hw.allreduce_hidden = measure_overlap(device, world);
  } else {
    hw.intra_node = {.all_to_all = {.alpha_us = 1.0, .gbps = 10.0}, .all_reduce = {.alpha_us = 1.0, .gbps = 10.0}};
    hw.description += " (one rank: the intra-node link is a placeholder; calibrate under mpirun -np 2 or more)";
  }
  hw.inter_node = options.inter_node != nullptr ? options.inter_node->inter_node : hw.intra_node;
  if (options.inter_node != nullptr)
    hw.description += fmt::format(" (inter-node link from {})", options.inter_node->path);
  else
    hw.description += " (inter-node link not measured: the intra-node fit)";
  return hw;
}

}  // namespace moerun::sim
