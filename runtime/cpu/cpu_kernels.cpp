// The one place where the oneDNN CPU backend's kernels are put into its KernelTable.
#include "runtime/cpu/cpu_kernels.h"

#include "runtime/cpu/cpu_device.h"

namespace moerun {

void register_cpu_kernels(KernelTable& t) {
  t.matmul = cpu::matmul;
  t.grouped_matmul = cpu::grouped_matmul;
  t.activation_forward = cpu::activation_forward;
  t.activation_backward = cpu::activation_backward;
  t.swiglu_forward = cpu::swiglu_forward;
  t.swiglu_backward = cpu::swiglu_backward;
  t.softmax_forward = cpu::softmax_forward;
  t.softmax_backward = cpu::softmax_backward;
  t.layer_norm_forward = cpu::layer_norm_forward;
  t.layer_norm_backward = cpu::layer_norm_backward;
  t.rms_norm_forward = cpu::rms_norm_forward;
  t.rms_norm_backward = cpu::rms_norm_backward;
  t.cross_entropy_forward = cpu::cross_entropy_forward;
  t.cross_entropy_backward = cpu::cross_entropy_backward;
  t.top_k = cpu::top_k;
  t.gather_rows = cpu::gather_rows;
  t.scatter_add_rows = cpu::scatter_add_rows;
  t.row_dot = cpu::row_dot;
  t.binary = cpu::binary;
  t.axpy = cpu::axpy;
  t.scale = cpu::scale;
  t.sum_rows = cpu::sum_rows;
  t.sum_squares = cpu::sum_squares;
  t.count_nonfinite = cpu::count_nonfinite;
  t.adamw = cpu::adamw;
  t.router_forward = cpu::router_forward;
  t.router_backward = cpu::router_backward;
  t.attention_forward = cpu::attention_forward;
  t.attention_backward = cpu::attention_backward;
  t.primitives_created = [](const Device& d) { return static_cast<const CpuDevice&>(d).primitives_created(); };
}

}  // namespace moerun
