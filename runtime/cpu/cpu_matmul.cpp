// Matmul and grouped matmul on oneDNN's matmul primitive. Plain matmul caches a primitive
// per exact shape (model shapes are static). Grouped matmul declares the token dimension
// as a runtime dimension, so one primitive serves every expert whatever its token count.
#include <fmt/format.h>

#include "kernels/elementwise.h"
#include "runtime/cpu/cpu_kernels.h"
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
  if (p.bias != nullptr) kernels::binary({.op = BinaryOp::Add, .a = p.c, .b = p.bias, .out = p.c});
}

void run_matmul(const MatmulArgs& p) {
  CpuDevice& dev = cpu_device_of(*p.c);
  const auto [m, k, n] = dims_of(p);
  if (m == 0 || n == 0) return;
  if (k == 0) return degenerate_inner(p);
  const std::string key =
      fmt::format("matmul:{}:{}:{}:{:d}{:d}{:d}{:d}", m, k, n, p.transpose_a, p.transpose_b, p.bias != nullptr, p.accumulate);
  const auto a_md = strided_md({m, k}, p.transpose_a ? dims{1, m} : dims{k, 1});
  const auto b_md = strided_md({k, n}, p.transpose_b ? dims{1, k} : dims{n, 1});
  const auto c_md = plain_md({m, n});
  const auto bias_md = p.bias ? plain_md({1, n}) : dnnl::memory::desc();
  dnnl::primitive& prim = dev.cache().get(key, [&] { return make_matmul(dev, a_md, b_md, bias_md, c_md, p.accumulate); });
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, wrap(dev, a_md, p.a->data())},
                                             {DNNL_ARG_WEIGHTS, wrap(dev, b_md, p.b->data())},
                                             {DNNL_ARG_DST, wrap(dev, c_md, p.c->data())}};
  if (p.bias) args.emplace(DNNL_ARG_BIAS, wrap(dev, bias_md, p.bias->data()));
  execute(dev, prim, std::move(args));
}

}  // namespace

void matmul(const MatmulArgs& p) {
  try {
    run_matmul(p);
  } catch (const dnnl::error& e) {
    MOERUN_THROW(KernelError, "[matmul] oneDNN failed for a {} b {} c {} (transpose a {}, b {}): {}",
                 shape_string(p.a->shape()), shape_string(p.b->shape()), shape_string(p.c->shape()), p.transpose_a,
                 p.transpose_b, e.what());
  }
}

void grouped_matmul(const GroupedMatmulArgs& args) {
  const MatmulArgs& first = args.groups.front();
  CpuDevice& dev = cpu_device_of(*first.c);
  const bool ta = first.transpose_a;
  // Fixed dimensions: without transpose_a the tokens are m; with it they are k.
  const std::int64_t fixed_mk = first.a->dim(1);
  const std::int64_t n = first.transpose_b ? first.b->dim(0) : first.b->dim(1);
  const std::int64_t k_fixed = ta ? 0 : (first.transpose_b ? first.b->dim(1) : first.b->dim(0));
  const std::string key = fmt::format("grouped_matmul:{}:{}:{}:{:d}{:d}{:d}{:d}", fixed_mk, n, k_fixed, ta,
                                      first.transpose_b, first.bias != nullptr, first.accumulate);
  // Descriptors with the token dimension left to run time; strides never depend on it.
  dnnl::memory::desc a_rt, b_rt, c_rt;
  if (!ta) {  // a [tokens, k], b [k, n] (or [n, k]), c [tokens, n]
    a_rt = strided_md({kRuntime, fixed_mk}, {fixed_mk, 1});
    b_rt = strided_md({k_fixed, n}, first.transpose_b ? dims{1, k_fixed} : dims{n, 1});
    c_rt = strided_md({kRuntime, n}, {n, 1});
  } else {  // a [tokens, m] read transposed, b [tokens, n], c [m, n]
    a_rt = strided_md({fixed_mk, kRuntime}, {1, fixed_mk});
    b_rt = strided_md({kRuntime, n}, {n, 1});
    c_rt = plain_md({fixed_mk, n});
  }
  const auto bias_md = first.bias ? plain_md({1, n}) : dnnl::memory::desc();
  try {
    dnnl::primitive& prim = dev.cache().get(key, [&] { return make_matmul(dev, a_rt, b_rt, bias_md, c_rt, first.accumulate); });
    for (const MatmulArgs& g : args.groups) {
      const auto [m, k, nn] = dims_of(g);
      if (m == 0 || nn == 0) continue;
      if (k == 0) {
        degenerate_inner(g);
        continue;
      }
      const std::int64_t tokens = g.a->dim(0);
      dnnl::memory::desc a_md, b_md, c_md;
      if (!ta) {
        a_md = strided_md({tokens, fixed_mk}, {fixed_mk, 1});
        b_md = b_rt;
        c_md = strided_md({tokens, n}, {n, 1});
      } else {
        a_md = strided_md({fixed_mk, tokens}, {1, fixed_mk});
        b_md = strided_md({tokens, n}, {n, 1});
        c_md = c_rt;
      }
      std::unordered_map<int, dnnl::memory> margs{{DNNL_ARG_SRC, wrap(dev, a_md, g.a->data())},
                                                  {DNNL_ARG_WEIGHTS, wrap(dev, b_md, g.b->data())},
                                                  {DNNL_ARG_DST, wrap(dev, c_md, g.c->data())}};
      if (g.bias) margs.emplace(DNNL_ARG_BIAS, wrap(dev, bias_md, g.bias->data()));
      execute(dev, prim, std::move(margs));
    }
  } catch (const dnnl::error& e) {
    MOERUN_THROW(KernelError, "[grouped_matmul] oneDNN failed for {} groups with a {} b {}: {}", args.groups.size(),
                 shape_string(first.a->shape()), shape_string(first.b->shape()), e.what());
  }
}

}  // namespace moerun::cpu
