// One MoE layer training step, the work ../shared/peers/torch_moe.py does: router, top-k
// with capacity, dispatch over the expert-parallel group (ep = world), expert FFNs, combine,
// MSE-style output gradient, backward, gradient sync, AdamW. Run under mpirun -np 1 or 2.
//
//   mpirun -np 2 bench_moe_layer [tokens_per_rank] [steps] [fp32|bf16] [contiguous|interleaved]
//
// interleaved puts expert e on rank e % ranks, as a rebalanced placement does: its owners are
// not in expert order, so the rows each rank sends are regrouped by destination rank
// (DispatchPlan::send_order). Its step against contiguous's is what that costs.
//
// bf16 is train.precision = bf16: the layer's input, the exchange and the experts in bf16,
// fp32 master weights, AdamW and output (refreshing the bf16 weight copies is in the step).
//
// Prints (rank 0): median step time split into expert compute / all-to-all / other, the row
// gathers (calls and ms a step: the layer's own and any regrouping),
// tokens/s, useful expert GFLOP/s per rank against a oneDNN matmul of the same shape, the
// all-to-all's bandwidth against plain MPI_Alltoall of the same volume, and a check that the
// bytes sent equal the token-copies that crossed ranks x d_model x the dtype's size.
#include <fmt/format.h>
#include <mpi.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/optimizer.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/grad_sync.h"
#include "parallel/mpi_group.h"
#include "runtime/kernel_profile.h"
#include "runtime/cpu/cpu_device.h"
#include "model/moe_layer.h"

using namespace moerun;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

Tensor random_tensor(Device& dev, Shape shape, std::uint64_t seed, float scale, DType dtype = DType::F32) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<std::size_t>(shape_numel(shape)));
  for (float& x : v) x = dist(rng);
  return Tensor::from_host(dev, std::move(shape), v, dtype);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// GB/s per rank of MPI_Alltoall moving `bytes_per_peer` to every other rank.
double mpi_alltoall_rate(ProcessGroup& world, std::int64_t bytes_per_peer) {
  const int p = world.size();
  if (p == 1) return 0.0;
  std::vector<char> send(static_cast<std::size_t>(bytes_per_peer * p)), recv(send.size());
  std::vector<double> times;
  for (int i = 0; i < 12; ++i) {
    world.barrier();
    const auto t = Clock::now();
    MPI_Alltoall(send.data(), static_cast<int>(bytes_per_peer), MPI_BYTE, recv.data(), static_cast<int>(bytes_per_peer),
                 MPI_BYTE, MPI_COMM_WORLD);
    if (i >= 2) times.push_back(seconds_since(t));
  }
  return double(bytes_per_peer * (p - 1)) / median(times) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  MpiEnvironment mpi(&argc, &argv);
  auto world = mpi.world();
  const int rank = world->rank(), p = world->size();
  const std::int64_t tokens = argc > 1 ? std::atoll(argv[1]) : 4096;
  const int steps = argc > 2 ? std::atoi(argv[2]) : 10;
  const DType dtype = argc > 3 && std::string(argv[3]) == "bf16" ? DType::BF16 : DType::F32;
  const bool interleaved = argc > 4 && std::string(argv[4]) == "interleaved";
  if (std::getenv("OMP_NUM_THREADS") == nullptr) omp_set_num_threads(std::max(1, omp_get_num_procs() / p));

  ModelConfig config;
  config.d_model = 512;
  config.d_ff = 2048;
  config.experts = 8;
  config.top_k = 2;
  config.capacity_factor = 1.25;
  config.init_std = 0.02;
  config.compute_dtype = dtype;
  config.validate();
  CpuDevice dev;
  ParameterStore params(dev, 1, config.init_std, dtype);
  std::vector<std::vector<Replica>> owners;
  for (int e = 0; e < static_cast<int>(config.experts); ++e) owners.push_back({{e % p, 1}});
  AllToAllDispatcher dispatcher(*world, interleaved ? Placement(p, owners) : Placement::contiguous(static_cast<int>(config.experts), p));
  Readout readout(dev);  // the layer adds its counts and losses there; this benchmark does not read them
  MoeLayer layer(params, config, 0, dispatcher, readout);
  std::vector<Parameter*> ordered = params.all();
  std::reverse(ordered.begin(), ordered.end());
  LocalGroup alone;  // ep = world: each expert has one copy, nothing to sum for experts
  GradSync sync(ordered, *world, alone, 4 << 20);
  std::vector<Tensor> m1, m2;
  for (Parameter* q : params.all()) {
    m1.push_back(Tensor::zeros(dev, q->value.shape()));
    m2.push_back(Tensor::zeros(dev, q->value.shape()));
  }
  Tensor h = random_tensor(dev, {tokens, config.d_model}, 100 + rank, 1.0f, dtype);  // a norm's output
  Tensor target = random_tensor(dev, {tokens, config.d_model}, 200 + rank, 0.1f);

  KernelProfile profile;
  std::vector<double> step_s, a2a_s, expert_s, gather_s;
  std::int64_t gathers = 0;
  std::int64_t bytes = 0, expected_bytes = 0, received_rows = 0;
  for (int it = 0; it < steps + 3; ++it) {
    const bool timed = it >= 3;
    profile.clear();
    dev.set_profile(timed ? &profile : nullptr);
    world->barrier();
    const auto start = Clock::now();
    params.zero_grads();
    Tensor y = layer.forward(h);
    // d(mean squared error)/dy = 2 (y - target) / numel
    kernels::axpy({.alpha = -1.0f, .x = &target, .y = &y});
    kernels::scale(y, 2.0f / static_cast<float>(y.numel()));
    Tensor dh = layer.backward(y, 1.0);
    for (Parameter* q : ordered) sync.mark_ready(*q);
    sync.finish();
    std::size_t i = 0;
    for (Parameter* q : params.all()) {
      kernels::adamw_update({.param = &q->value, .grad = &q->grad, .m = &m1[i], .v = &m2[i], .lr = 1e-4f, .step = it + 1});
      ++i;
    }
    params.refresh_compute_copies();
    dev.synchronize();
    const double s = seconds_since(start);
    const DispatchStats st = dispatcher.take_stats();
    dev.set_profile(nullptr);
    if (!timed) continue;
    step_s.push_back(s);
    a2a_s.push_back(st.seconds);
    double e = 0.0;
    for (const auto& [name, t] : profile.entries())
      if (name == "grouped_matmul" || name.rfind("activation", 0) == 0) e += t.seconds;
    expert_s.push_back(e);
    const auto gather = profile.entries().find("gather_rows");
    gather_s.push_back(gather == profile.entries().end() ? 0.0 : gather->second.seconds);
    gathers = gather == profile.entries().end() ? 0 : gather->second.calls;
    bytes = st.bytes_sent;
    // Token-copies that crossed ranks: sent in dispatch plus returned in combine, forward and
    // backward each. The layer's routing of this step tells which.
    std::int64_t out_rows = 0, in_rows = 0, recv_total = 0;
    const DispatchPlan& last = layer.last_plan();
    for (int r = 0; r < p; ++r) {
      if (r == rank) continue;
      out_rows += last.send_per_rank[static_cast<std::size_t>(r)];
      in_rows += last.recv_per_rank[static_cast<std::size_t>(r)];
    }
    for (std::int64_t c : last.recv_per_local_expert) recv_total += c;
    received_rows = recv_total;
    expected_bytes = 2 * (out_rows + in_rows) * config.d_model * static_cast<std::int64_t>(dtype_size(dtype));
  }
  const double step = median(step_s), a2a = median(a2a_s), expert = median(expert_s);
  // Useful expert FLOPs: the kept token-copies this rank's experts processed, two matmuls of
  // 2 d ff each, times 3 (forward, data gradient, weight gradient).
  const double expert_flops = double(received_rows) * 3.0 * 2.0 * 2.0 * double(config.d_model * config.d_ff);
  // oneDNN's rate for the same shape: the mean rows per local expert.
  const std::int64_t rows = std::max<std::int64_t>(1, received_rows / static_cast<std::int64_t>(dispatcher.local_experts().size()));
  Tensor a(dev, {rows, config.d_model}, dtype), b(dev, {config.d_model, config.d_ff}, dtype), c(dev, {rows, config.d_ff}, dtype);
  a.zero();
  b.zero();
  kernels::matmul({.a = &a, .b = &b, .c = &c});
  const auto t0 = Clock::now();
  for (int i = 0; i < 20; ++i) kernels::matmul({.a = &a, .b = &b, .c = &c});
  const double matmul_rate = 2.0 * double(rows * config.d_model * config.d_ff) * 20 / seconds_since(t0) * 1e-9;
  const double a2a_rate = a2a > 0 ? double(bytes) / a2a * 1e-9 : 0.0;
  const double mpi_rate = mpi_alltoall_rate(*world, p > 1 ? bytes / 4 / (p - 1) : 0);
  double totals[2] = {step, double(bytes == expected_bytes ? 0 : 1)};
  world->all_reduce(std::span<double>(&totals[1], 1), ReduceOp::Max);
  if (rank == 0) {
    fmt::print("moe layer step ({}, bf16 {}): {} rank(s) x {} thread(s), {} tokens/rank, d_model {} d_ff {} experts {} top-{} "
               "capacity {}\n",
               dtype_name(dtype), dev.dtype_path(DType::BF16), p, omp_get_max_threads(), tokens, config.d_model, config.d_ff, config.experts, config.top_k,
               config.capacity_factor);
    fmt::print("step {:.1f} ms (median of {}) = expert compute {:.1f} + all-to-all {:.1f} + other {:.1f} ms\n", 1e3 * step,
               steps, 1e3 * expert, 1e3 * a2a, 1e3 * (step - expert - a2a));
    fmt::print("tokens/s: {:.0f} in all, {:.0f} per rank\n", double(tokens * p) / step, double(tokens) / step);
    fmt::print("placement {}: {} row gathers a step, {:.2f} ms\n", dispatcher.placement().describe(), gathers,
               1e3 * median(gather_s));
    fmt::print("useful expert GFLOP/s per rank: {:.1f} vs oneDNN matmul [{} x {}] x [{} x {}] now {:.1f} -> {:.0f}%\n",
               expert_flops / expert * 1e-9, rows, config.d_model, config.d_model, config.d_ff, matmul_rate,
               100.0 * expert_flops / expert * 1e-9 / matmul_rate);
    if (p > 1) {
      fmt::print("all-to-all: {:.1f} MB sent per step, {:.2f} GB/s achieved vs MPI_Alltoall of the same volume {:.2f} GB/s "
                 "-> {:.0f}%\n",
                 double(bytes) * 1e-6, a2a_rate, mpi_rate, 100.0 * a2a_rate / mpi_rate);
    }
    fmt::print("bytes check: sent {} = crossing token-copies x d_model x {} = {}: {}\n", bytes, dtype_size(dtype), expected_bytes,
               totals[1] == 0 ? "OK on every rank" : "MISMATCH");
  }
  return totals[1] == 0 ? 0 : 1;
}
