// Matmul through kernels/ against the same oneDNN primitive called directly, for expert-FFN
// shapes in the three roles of training (forward, data gradient, weight gradient); and
// grouped matmul with uneven groups against one big matmul of the same FLOPs.
//
// Each iteration times both paths back to back (manual timing), so machine noise hits both;
// counters: GFLOPs (kernels/ path), GFLOPs_direct, overhead_pct = (t_kernels / t_direct - 1) * 100.
#include <benchmark/benchmark.h>

#include <chrono>
#include <random>

#include "kernels/matmul.h"
#include "runtime/cpu/cpu_device.h"

namespace moerun {
namespace {

CpuDevice& device() {
  static CpuDevice dev;
  return dev;
}

Tensor random_tensor(Shape shape, std::uint64_t seed, DType dtype = DType::F32) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(shape_numel(shape)));
  for (float& x : v) x = dist(rng);
  return Tensor::from_host(device(), std::move(shape), v, dtype);
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

enum Role { kForward = 0, kDataGrad = 1, kWeightGrad = 2 };
const char* role_name(int r) { return r == kForward ? "fwd" : r == kDataGrad ? "bwd_data" : "bwd_weight"; }

// The oneDNN primitive the kernels/ path uses for the same product, built and run by hand.
struct DirectMatmul {
  dnnl::matmul prim;
  dnnl::memory a, b, c;
  DirectMatmul(const Tensor& ta, bool trans_a, const Tensor& tb, bool trans_b, Tensor& tc) {
    auto& eng = device().engine();
    const auto m = tc.dim(0), n = tc.dim(1), k = trans_a ? ta.dim(0) : ta.dim(1);
    using dt = dnnl::memory::data_type;
    const dnnl::memory::desc a_md({m, k}, dt::f32, trans_a ? dnnl::memory::dims{1, m} : dnnl::memory::dims{k, 1});
    const dnnl::memory::desc b_md({k, n}, dt::f32, trans_b ? dnnl::memory::dims{1, k} : dnnl::memory::dims{n, 1});
    const dnnl::memory::desc c_md({m, n}, dt::f32, dnnl::memory::dims{n, 1});
    prim = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, b_md, c_md), eng));
    a = dnnl::memory(a_md, eng, const_cast<void*>(ta.data()));
    b = dnnl::memory(b_md, eng, const_cast<void*>(tb.data()));
    c = dnnl::memory(c_md, eng, tc.data());
  }
  void run() {
    prim.execute(device().stream(), {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    device().stream().wait();
  }
};

void BM_MatmulVsDirect(benchmark::State& state) {
  const std::int64_t tokens = state.range(0), d = state.range(1), ff = state.range(2);
  const int role = static_cast<int>(state.range(3));
  Tensor x = random_tensor({tokens, d}, 1), w = random_tensor({d, ff}, 2), dy = random_tensor({tokens, ff}, 3);
  Tensor y(device(), {tokens, ff}), dx(device(), {tokens, d}), dw(device(), {d, ff});
  MatmulArgs args;
  if (role == kForward) args = {.a = &x, .b = &w, .c = &y};
  if (role == kDataGrad) args = {.a = &dy, .b = &w, .c = &dx, .transpose_b = true};
  if (role == kWeightGrad) args = {.a = &x, .b = &dy, .c = &dw, .transpose_a = true};
  DirectMatmul direct(*args.a, args.transpose_a, *args.b, args.transpose_b, *args.c);
  kernels::matmul(args);  // create and cache the primitive outside the timing
  direct.run();
  double t_kernels = 0, t_direct = 0;
  for (auto _ : state) {
    auto t0 = Clock::now();
    kernels::matmul(args);
    device().synchronize();
    const double tk = seconds_since(t0);
    t0 = Clock::now();
    direct.run();
    const double td = seconds_since(t0);
    t_kernels += tk;
    t_direct += td;
    state.SetIterationTime(tk);
  }
  const double flops = 2.0 * double(tokens) * double(d) * double(ff) * double(state.iterations());
  state.counters["GFLOPs"] = flops / t_kernels * 1e-9;
  state.counters["GFLOPs_direct"] = flops / t_direct * 1e-9;
  state.counters["overhead_pct"] = (t_kernels / t_direct - 1.0) * 100.0;
  state.SetLabel(role_name(role));
}

void matmul_shapes(benchmark::internal::Benchmark* b) {
  for (std::int64_t tokens : {256, 1024, 4096})
    for (std::int64_t d : {256, 512, 1024})
      for (std::int64_t ff : {1024, 2048, 4096})
        for (int role : {kForward, kDataGrad, kWeightGrad}) b->Args({tokens, d, ff, role});
}
BENCHMARK(BM_MatmulVsDirect)->Apply(matmul_shapes)->ArgNames({"tokens", "d", "ff", "role"})->UseManualTime()
    ->Unit(benchmark::kMillisecond)->MinTime(0.2);

// Uneven groups (expert token counts) of at least `min_rows`, `total` tokens in all, through
// grouped_matmul, against one [total, d] x [d, ff] matmul. Counter ratio = grouped / big GFLOP/s.
// bf16 = 1: operands and outputs in bf16 as train.precision = bf16 has them (weight gradients
// into fp32 buffers), both paths.
void BM_GroupedVsBig(benchmark::State& state) {
  const std::int64_t total = state.range(0), min_rows = state.range(1), d = 512;
  const std::int64_t ff = state.range(4) > 0 ? state.range(4) : 2048;
  const int role = static_cast<int>(state.range(2));
  const DType dt = state.range(3) == 1 ? DType::BF16 : DType::F32;
  // Group sizes: min_rows plus a skewed share of the rest (experts see uneven loads).
  std::vector<std::int64_t> sizes;
  std::int64_t left = total;
  std::mt19937_64 rng(7);
  while (left > 0) {
    std::int64_t s = std::min(left, min_rows + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(3 * min_rows)));
    if (left - s < min_rows) s = left;
    sizes.push_back(s);
    left -= s;
  }
  Tensor x = random_tensor({total, d}, 1, dt), dy = random_tensor({total, ff}, 3, dt), y(device(), {total, ff}, dt),
         dx(device(), {total, d}, dt);
  std::vector<Tensor> ws, dws, xs, dys, ys, dxs;
  GroupedMatmulArgs grouped;
  std::int64_t row = 0;
  for (std::size_t g = 0; g < sizes.size(); ++g) {
    ws.push_back(random_tensor({d, ff}, 10 + g, dt));
    dws.emplace_back(device(), Shape{d, ff});
    xs.push_back(x.rows(row, row + sizes[g]));
    dys.push_back(dy.rows(row, row + sizes[g]));
    ys.push_back(y.rows(row, row + sizes[g]));
    dxs.push_back(dx.rows(row, row + sizes[g]));
    row += sizes[g];
  }
  for (std::size_t g = 0; g < sizes.size(); ++g) {
    if (role == kForward) grouped.groups.push_back({.a = &xs[g], .b = &ws[g], .c = &ys[g]});
    if (role == kDataGrad) grouped.groups.push_back({.a = &dys[g], .b = &ws[g], .c = &dxs[g], .transpose_b = true});
    if (role == kWeightGrad) grouped.groups.push_back({.a = &xs[g], .b = &dys[g], .c = &dws[g], .transpose_a = true});
  }
  // The big matmul with the same FLOPs: forward and data gradient are one product over all
  // tokens; the weight gradient's equal-FLOP product is [d, total] x [total, ff].
  Tensor dw_big(device(), {d, ff});
  MatmulArgs big;
  if (role == kForward) big = {.a = &x, .b = &ws[0], .c = &y};
  if (role == kDataGrad) big = {.a = &dy, .b = &ws[0], .c = &dx, .transpose_b = true};
  if (role == kWeightGrad) big = {.a = &x, .b = &dy, .c = &dw_big, .transpose_a = true};
  kernels::grouped_matmul(grouped);
  kernels::matmul(big);
  double t_grouped = 0, t_big = 0;
  for (auto _ : state) {
    auto t0 = Clock::now();
    kernels::grouped_matmul(grouped);
    device().synchronize();
    const double tg = seconds_since(t0);
    t0 = Clock::now();
    kernels::matmul(big);
    device().synchronize();
    t_big += seconds_since(t0);
    t_grouped += tg;
    state.SetIterationTime(tg);
  }
  const double flops = 2.0 * double(total) * double(d) * double(ff) * double(state.iterations());
  state.counters["groups"] = static_cast<double>(sizes.size());
  state.counters["GFLOPs"] = flops / t_grouped * 1e-9;
  state.counters["GFLOPs_big"] = flops / t_big * 1e-9;
  state.counters["ratio"] = t_big / t_grouped;
  state.SetLabel(std::string(role_name(role)) + " " + std::string(dtype_name(dt)));
}
BENCHMARK(BM_GroupedVsBig)
    ->ArgsProduct({{4096}, {32, 128, 256, 512}, {kForward, kDataGrad, kWeightGrad}, {0, 1}, {2048}})
    ->ArgNames({"total", "min_rows", "role", "bf16", "ff"})->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.3);
// Hot experts: groups of 1024-4095 rows, as a skewed router gives the few experts it favours.
BENCHMARK(BM_GroupedVsBig)
    ->ArgsProduct({{16384}, {1024}, {kForward, kDataGrad, kWeightGrad}, {0, 1}, {2048}})
    ->ArgNames({"total", "min_rows", "role", "bf16", "ff"})->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.3);
// Fine-grained experts (DeepSeek-MoE style): 2048 tokens x top-8 = 16384 copies over about 200
// experts of 32-128 rows each, d_ff 128.
BENCHMARK(BM_GroupedVsBig)
    ->ArgsProduct({{16384}, {32}, {kForward, kDataGrad, kWeightGrad}, {0, 1}, {128}})
    ->ArgNames({"total", "min_rows", "role", "bf16", "ff"})->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.3);

}  // namespace
}  // namespace moerun

BENCHMARK_MAIN();
