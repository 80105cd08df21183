#include "runtime/cpu/cpu_precision.h"

#include <dnnl.hpp>
#include <fmt/format.h>

#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/onednn_util.h"

namespace moerun::cpu {
namespace {

std::string isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx2: return "avx2";
    default: return fmt::format("isa 0x{:x}", static_cast<unsigned>(isa));
  }
}

}  // namespace

bool native_bf16() {
  static const bool native = [] {
    const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
    const auto bf16 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
    return (isa & bf16) == bf16;  // isa values are feature bit sets; AMX includes bf16
  }();
  return native;
}

std::string bf16_path() {
  const std::string isa = isa_name(dnnl::get_effective_cpu_isa());
  if (native_bf16()) return fmt::format("native (oneDNN isa {})", isa);
  return fmt::format("emulated: stored and exchanged as bf16, computed in fp32 (oneDNN isa {} has no bf16 instructions)",
                     isa);
}

bool any_bf16(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors)
    if (t != nullptr && t->dtype() == DType::BF16) return true;
  return false;
}

const Tensor* F32Staging::in(const Tensor* t) {
  if (t == nullptr || t->dtype() != DType::BF16) return t;
  Tensor& copy = copies_.emplace_back(t->device(), t->shape(), DType::F32);
  convert_values(*t, copy);
  return &copy;
}

Tensor* F32Staging::out(Tensor* t, bool read) {
  if (t == nullptr || t->dtype() != DType::BF16) return t;
  Tensor& copy = copies_.emplace_back(t->device(), t->shape(), DType::F32);
  if (read) convert_values(*t, copy);
  outputs_.emplace_back(&copy, t);
  return &copy;
}

F32Staging::~F32Staging() noexcept(false) {
  if (std::uncaught_exceptions() > 0) return;  // the kernel failed: its outputs are garbage anyway
  for (auto& [copy, original] : outputs_) convert_values(*copy, *original);
}

// oneDNN's reorder converts with JIT code where the CPU has bf16 instructions, in power-of-two
// chunks (2^20 down to 2^10 values: at most 11 primitives, none after warm-up, whatever the
// token counts); the scalar loop does the rest, and everything on CPUs without bf16.
void convert_values(const Tensor& src, Tensor& dst) {
  const std::int64_t n = src.numel();
  if (n == 0) return;
  if (src.dtype() == dst.dtype()) return dst.device().copy_device_to_device(dst.data(), src.data(), src.bytes());
  const std::size_t in_size = dtype_size(src.dtype()), out_size = dtype_size(dst.dtype());
  std::int64_t done = 0;
  if (native_bf16()) {
    CpuDevice& dev = cpu_device_of(src);
    const auto type = [](DType t) { return t == DType::BF16 ? dnnl::memory::data_type::bf16 : kF32; };
    for (std::int64_t chunk = std::int64_t{1} << 20; chunk >= 1024; chunk /= 2) {
      const dnnl::memory::desc from({chunk}, type(src.dtype()), dnnl::memory::dims{1});
      const dnnl::memory::desc to({chunk}, type(dst.dtype()), dnnl::memory::dims{1});
      for (; n - done >= chunk; done += chunk) {
        const std::string key = fmt::format("convert:{}:{}:{}", dtype_name(src.dtype()), dtype_name(dst.dtype()), chunk);
        auto& prim = dev.cache().get(key, [&] {
          return dnnl::reorder(dnnl::reorder::primitive_desc(dev.engine(), from, dev.engine(), to));
        });
        execute(dev, prim, {{DNNL_ARG_FROM, wrap(dev, from, static_cast<const char*>(src.data()) + done * in_size)},
                            {DNNL_ARG_TO, wrap(dev, to, static_cast<char*>(dst.data()) + done * out_size)}});
      }
    }
  }
  with_typed(src, [&](const auto* s) {
    with_typed(dst, [&](auto* d) {
#pragma omp parallel for if (n - done > (1 << 15))
      for (std::int64_t i = done; i < n; ++i) store(d, i, load(s, i));
    });
  });
}

void convert(const Tensor& src, Tensor& dst) {
  guarded("convert", [&] { convert_values(src, dst); });
}

}  // namespace moerun::cpu
