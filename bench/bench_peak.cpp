// The machine's fp32 FMA peak, measured: independent FMA chains (enough to hide latency)
// with AVX2 (8 lanes) and AVX-512 (16 lanes), on one thread and on every core. Gives the
// denominator for the "fraction of peak" figures in docs/performance.md.
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

namespace {

constexpr int kChains = 12;
constexpr long kLoops = 1 << 22;

__attribute__((target("avx2,fma"))) float fma_avx2(long loops) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (long l = 0; l < loops; ++l)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_ps(s, acc[i]);
  return _mm256_cvtss_f32(s);
}

__attribute__((target("avx512f"))) float fma_avx512(long loops) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (long l = 0; l < loops; ++l)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);  // keep every chain live
  float out[16];
  _mm512_storeu_ps(out, s);
  return out[0] + out[15];
}

template <float (*Kernel)(long), int Lanes>
void BM_FmaPeak(benchmark::State& state) {
  const int threads = state.range(0) == 0 ? omp_get_max_threads() : static_cast<int>(state.range(0));
  for (auto _ : state) {
    float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += Kernel(kLoops);
    benchmark::DoNotOptimize(sink);
  }
  const double flops = 2.0 * Lanes * kChains * double(kLoops) * threads * double(state.iterations());
  state.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
  state.counters["threads"] = threads;
}

BENCHMARK_TEMPLATE(BM_FmaPeak, fma_avx2, 8)->Arg(1)->Arg(0)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_FmaPeak, fma_avx512, 16)->Arg(1)->Arg(0)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
