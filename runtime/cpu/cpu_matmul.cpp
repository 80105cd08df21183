// Matmul and grouped matmul on oneDNN's matmul primitive. Plain matmul caches a primitive
// per exact shape (model shapes are static); grouped matmul is explained above its definition.
#include <fmt/format.h>

#include <deque>

#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/cpu_precision.h"
#include "runtime/cpu/onednn_util.h"

namespace moerun::cpu {
namespace {

constexpr dnnl::memory::dim kRuntime = DNNL_RUNTIME_DIM_VAL;

struct MatmulDims {
  std::int64_t m, k, n;
};
MatmulDims dims_of(const MatmulArgs& p) {
  const std::int64_t m = p.transpose_a ? p.a->dim(1) : p.a->dim(0);
  const std::int64_t k = p.transpose_a ? p.a->dim(0) : p.a->dim(1);
  const std::int64_t n = p.transpose_b ? p.b->dim(0) : p.b->dim(1);
  return {m, k, n};
}

dnnl::primitive make_matmul(CpuDevice& dev, const dnnl::memory::desc& a, const dnnl::memory::desc& b,
                            const dnnl::memory::desc& bias, const dnnl::memory::desc& c, bool accumulate) {
  dnnl::primitive_attr attr;
  if (accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  dnnl::matmul::desc desc = bias ? dnnl::matmul::desc(a, b, bias, c) : dnnl::matmul::desc(a, b, c);
  return dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, dev.engine()));
}

// A product with an empty inner dimension is zero: c = bias (+ c).
void degenerate_inner(const MatmulArgs& p) {
  if (!p.accumulate) p.c->zero();
  if (p.bias != nullptr) cpu::binary({.op = BinaryOp::Add, .a = p.c, .b = p.bias, .out = p.c});
}

void run_matmul(const MatmulArgs& p) {
  CpuDevice& dev = cpu_device_of(*p.c);
  const auto [m, k, n] = dims_of(p);
  if (m == 0 || n == 0) return;
  if (k == 0) return degenerate_inner(p);
  const auto ta = dnnl_type(p.a->dtype()), tc = dnnl_type(p.c->dtype());
  const std::string key = fmt::format("matmul:{}:{}:{}:{:d}{:d}{:d}{:d}:{}{}", m, k, n, p.transpose_a, p.transpose_b,
                                      p.bias != nullptr, p.accumulate, dtype_name(p.a->dtype()), dtype_name(p.c->dtype()));
  const auto a_md = strided_md({m, k}, p.transpose_a ? dims{1, m} : dims{k, 1}, ta);
  const auto b_md = strided_md({k, n}, p.transpose_b ? dims{1, k} : dims{n, 1}, ta);
  const auto c_md = plain_md({m, n}, tc);
  const auto bias_md = p.bias ? plain_md({1, n}) : dnnl::memory::desc();
  dnnl::primitive& prim = dev.cache().get(key, [&] { return make_matmul(dev, a_md, b_md, bias_md, c_md, p.accumulate); });
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, wrap(dev, a_md, p.a->data())},
                                             {DNNL_ARG_WEIGHTS, wrap(dev, b_md, p.b->data())},
                                             {DNNL_ARG_DST, wrap(dev, c_md, p.c->data())}};
  if (p.bias) args.emplace(DNNL_ARG_BIAS, wrap(dev, bias_md, p.bias->data()));
  execute(dev, prim, std::move(args));
}

// Operands in the dtypes the primitives take: both f32 or both bf16. A bf16 operand makes the
// product bf16 where the CPU has bf16 instructions (the f32 operand rounded into `rounded`);
// elsewhere, or when only c is bf16, the bf16 tensors are staged through fp32.
struct PreparedOperands {
  std::deque<Tensor> rounded;
  F32Staging staging;
};
void prepare(MatmulArgs& p, PreparedOperands& prepared) {
  if (all_f32({p.a, p.b, p.c})) return;
  if (!native_bf16() || all_f32({p.a, p.b})) {
    p.a = prepared.staging.in(p.a);
    p.b = prepared.staging.in(p.b);
    p.c = prepared.staging.out(p.c, p.accumulate);
    return;
  }
  for (const Tensor** operand : {&p.a, &p.b}) {
    if ((*operand)->dtype() == DType::BF16) continue;
    Tensor& copy = prepared.rounded.emplace_back((*operand)->device(), (*operand)->shape(), DType::BF16);
    convert_values(**operand, copy);
    *operand = &copy;
  }
}

}  // namespace

void matmul(const MatmulArgs& args) {
  MatmulArgs p = args;
  try {
    PreparedOperands prepared;
    prepare(p, prepared);
    run_matmul(p);
  } catch (const dnnl::error& e) {
    MOERUN_THROW(KernelError, "[matmul] oneDNN failed for a {} b {} c {} (transpose a {}, b {}): {}",
                 shape_string(p.a->shape()), shape_string(p.b->shape()), shape_string(p.c->shape()), p.transpose_a,
                 p.transpose_b, e.what());
  }
}

// Grouped matmul. Token counts change every step, so the token dimension cannot be baked into
// one primitive. oneDNN 2.6 serves runtime-dimension matmuls with its gemm:jit kernels rather
// than brgemm; measured against one big matmul of equal FLOPs (bench_matmul, docs/performance.md):
//  - forward (a [tokens, k] x b [k, n]): runtime-M is as fast as the big matmul -> one primitive;
//  - weight gradient (a transposed, tokens are the reduction dim): runtime-K is as fast -> one;
//  - data gradient (b transposed): runtime-M reached only ~65%, so each group is cut into
//    power-of-two row tiles (kMaxTileRows down to kMinTileRows), each a fixed-shape brgemm
//    primitive, plus a runtime-M remainder under kMinTileRows rows;
//  - bf16 forward: runtime-M is as fast for groups of up to 2047 rows, but groups of
//    1024-4095 rows (the hot experts of a skewed router) ran at 0.29-0.68 of the big matmul
//    (110-267 GFLOP/s against 366-395, four runs) on a Zen 5 host (avx512_bf16; bench_matmul,
//    total:16384/min_rows:1024). The runtime-M primitive is called on at most kMaxRuntimeRows
//    rows at a time: 0.98-0.995. (fp32 forward ran at 1.08x the big matmul there; tiling small
//    groups like the data gradient cost 7-36%.)
// Primitives per shape are bounded (at most 8 tiles + 1), created on first use, none after.
namespace {
constexpr std::int64_t kMaxTileRows = 1024;
constexpr std::int64_t kMinTileRows = 16;
constexpr std::int64_t kMaxRuntimeRows = 2048;
}

void grouped_matmul(const GroupedMatmulArgs& original) {
  GroupedMatmulArgs args = original;
  PreparedOperands prepared;
  for (MatmulArgs& g : args.groups) prepare(g, prepared);
  const MatmulArgs& first = args.groups.front();
  CpuDevice& dev = cpu_device_of(*first.c);
  const auto type = dnnl_type(first.a->dtype()), c_type = dnnl_type(first.c->dtype());
  const std::size_t in_size = dtype_size(first.a->dtype()), out_size = dtype_size(first.c->dtype());
  const bool ta = first.transpose_a, tb = first.transpose_b;
  const std::int64_t a_cols = first.a->dim(1);  // k without transpose_a; m with it
  const std::int64_t n = tb ? first.b->dim(0) : first.b->dim(1);
  const std::int64_t k_fixed = ta ? 0 : (tb ? first.b->dim(1) : first.b->dim(0));
  const std::string key = fmt::format("grouped_matmul:{}:{}:{}:{:d}{:d}{:d}{:d}:{}{}", a_cols, n, k_fixed, ta, tb,
                                      first.bias != nullptr, first.accumulate, dtype_name(first.a->dtype()),
                                      dtype_name(first.c->dtype()));
  const auto bias_md = first.bias ? plain_md({1, n}) : dnnl::memory::desc();
  const auto b_fixed = ta ? dnnl::memory::desc() : strided_md({k_fixed, n}, tb ? dims{1, k_fixed} : dims{n, 1}, type);
  auto run = [&](dnnl::primitive& prim, const dnnl::memory::desc& a_md, const void* a, const dnnl::memory::desc& b_md,
                 const void* b, const dnnl::memory::desc& c_md, void* c, const Tensor* bias) {
    std::unordered_map<int, dnnl::memory> margs{{DNNL_ARG_SRC, wrap(dev, a_md, a)},
                                                {DNNL_ARG_WEIGHTS, wrap(dev, b_md, b)},
                                                {DNNL_ARG_DST, wrap(dev, c_md, c)}};
    if (bias) margs.emplace(DNNL_ARG_BIAS, wrap(dev, bias_md, bias->data()));
    execute(dev, prim, std::move(margs));
  };
  try {
    for (const MatmulArgs& g : args.groups) {
      const auto [m, k, nn] = dims_of(g);
      if (m == 0 || nn == 0) continue;
      if (k == 0) {
        degenerate_inner(g);
        continue;
      }
      const std::int64_t tokens = g.a->dim(0);
      if (ta) {  // a [tokens, m] read transposed, b [tokens, n], c [m, n]: tokens are k.
        const auto a_rt = strided_md({a_cols, kRuntime}, {1, a_cols}, type), b_rt = strided_md({kRuntime, n}, {n, 1}, type);
        dnnl::primitive& prim = dev.cache().get(key, [&] {
          return make_matmul(dev, a_rt, b_rt, bias_md, plain_md({a_cols, n}, c_type), first.accumulate);
        });
        run(prim, strided_md({a_cols, tokens}, {1, a_cols}, type), g.a->data(), strided_md({tokens, n}, {n, 1}, type),
            g.b->data(), plain_md({a_cols, n}, c_type), g.c->data(), g.bias);
        continue;
      }
      // a [tokens, k], c [tokens, n].
      const auto* a = static_cast<const char*>(g.a->data());
      auto* c = static_cast<char*>(g.c->data());
      const auto a_at = [&](std::int64_t row) { return a + row * a_cols * static_cast<std::int64_t>(in_size); };
      const auto c_at = [&](std::int64_t row) { return c + row * n * static_cast<std::int64_t>(out_size); };
      std::int64_t r = 0;
      // Power-of-two tiles from the largest down (data gradient only), then the rest.
      for (std::int64_t tile = kMaxTileRows; tb && tile >= kMinTileRows; tile /= 2) {
        for (; tokens - r >= tile; r += tile) {
          const auto a_md = plain_md({tile, a_cols}, type), c_md = plain_md({tile, n}, c_type);
          dnnl::primitive& prim = dev.cache().get(fmt::format("{}:tile{}", key, tile), [&] {
            return make_matmul(dev, a_md, b_fixed, bias_md, c_md, first.accumulate);
          });
          run(prim, a_md, a_at(r), b_fixed, g.b->data(), c_md, c_at(r), g.bias);
        }
      }
      const std::int64_t chunk = type == dnnl::memory::data_type::bf16 ? kMaxRuntimeRows : tokens;
      for (; r < tokens; r += chunk) {
        const std::int64_t rows = std::min(chunk, tokens - r);
        dnnl::primitive& prim = dev.cache().get(key + ":rest", [&] {
          return make_matmul(dev, strided_md({kRuntime, a_cols}, {a_cols, 1}, type), b_fixed, bias_md,
                             strided_md({kRuntime, n}, {n, 1}, c_type), first.accumulate);
        });
        run(prim, plain_md({rows, a_cols}, type), a_at(r), b_fixed, g.b->data(), plain_md({rows, n}, c_type), c_at(r),
            g.bias);
      }
    }
  } catch (const dnnl::error& e) {
    MOERUN_THROW(KernelError, "[grouped_matmul] oneDNN failed for {} groups with a {} b {}: {}", args.groups.size(),
                 shape_string(first.a->shape()), shape_string(first.b->shape()), e.what());
  }
}

}  // namespace moerun::cpu
