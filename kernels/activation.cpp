#include "kernels/activation.h"

#include "kernels/check.h"

namespace moerun::kernels {
using detail::check_f32;
using detail::check_present;

void activation_forward(const ActivationArgs& p) {
  const auto [table, device] = detail::table_for("activation_forward", {p.x, p.out});
  check_present("activation_forward", "x", p.x);
  check_f32("activation_forward", "x", p.x, p.x->shape());
  check_f32("activation_forward", "out", p.out, p.x->shape());
  const ScopedKernelTimer timer(device, "activation_forward");
  table.activation_forward(p);
}

void activation_backward(const ActivationArgs& p) {
  const auto [table, device] = detail::table_for("activation_backward", {p.x, p.dy, p.out});
  check_present("activation_backward", "x", p.x);
  check_f32("activation_backward", "x", p.x, p.x->shape());
  check_f32("activation_backward", "dy", p.dy, p.x->shape());
  check_f32("activation_backward", "out", p.out, p.x->shape());
  const ScopedKernelTimer timer(device, "activation_backward");
  table.activation_backward(p);
}

void swiglu_forward(const SwiGluArgs& p) {
  const auto [table, device] = detail::table_for("swiglu_forward", {p.gate, p.up, p.y});
  check_present("swiglu_forward", "gate", p.gate);
  const Shape& s = p.gate->shape();
  check_f32("swiglu_forward", "gate", p.gate, s);
  check_f32("swiglu_forward", "up", p.up, s);
  check_f32("swiglu_forward", "y", p.y, s);
  const ScopedKernelTimer timer(device, "swiglu_forward");
  table.swiglu_forward(p);
}

void swiglu_backward(const SwiGluArgs& p) {
  const auto [table, device] = detail::table_for("swiglu_backward", {p.gate, p.up, p.dy, p.dgate, p.dup});
  check_present("swiglu_backward", "gate", p.gate);
  const Shape& s = p.gate->shape();
  check_f32("swiglu_backward", "gate", p.gate, s);
  check_f32("swiglu_backward", "up", p.up, s);
  check_f32("swiglu_backward", "dy", p.dy, s);
  check_f32("swiglu_backward", "dgate", p.dgate, s);
  check_f32("swiglu_backward", "dup", p.dup, s);
  const ScopedKernelTimer timer(device, "swiglu_backward");
  table.swiglu_backward(p);
}

}  // namespace moerun::kernels
