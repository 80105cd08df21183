#include "kernels/activation.h"

#include "kernels/check.h"

namespace moerun::kernels {
using detail::check_present;

void activation_forward(const ActivationArgs& p) {
  constexpr std::string_view k = "activation_forward";
  const auto [table, device] = detail::table_for(k, {p.x, p.out});
  check_present(k, "x", p.x);
  detail::check_float_same(k, p.x->shape(), {{"x", p.x}, {"out", p.out}});
  const ScopedKernelTimer timer(device, k);
  table.activation_forward(p);
}

void activation_backward(const ActivationArgs& p) {
  constexpr std::string_view k = "activation_backward";
  const auto [table, device] = detail::table_for(k, {p.x, p.dy, p.out});
  check_present(k, "x", p.x);
  detail::check_float_same(k, p.x->shape(), {{"x", p.x}, {"dy", p.dy}, {"out", p.out}});
  const ScopedKernelTimer timer(device, k);
  table.activation_backward(p);
}

void swiglu_forward(const SwiGluArgs& p) {
  constexpr std::string_view k = "swiglu_forward";
  const auto [table, device] = detail::table_for(k, {p.gate, p.up, p.y});
  check_present(k, "gate", p.gate);
  detail::check_float_same(k, p.gate->shape(), {{"gate", p.gate}, {"up", p.up}, {"y", p.y}});
  const ScopedKernelTimer timer(device, k);
  table.swiglu_forward(p);
}

void swiglu_backward(const SwiGluArgs& p) {
  constexpr std::string_view k = "swiglu_backward";
  const auto [table, device] = detail::table_for(k, {p.gate, p.up, p.dy, p.dgate, p.dup});
  check_present(k, "gate", p.gate);
  detail::check_float_same(k, p.gate->shape(), {{"gate", p.gate}, {"up", p.up}, {"dy", p.dy}, {"dgate", p.dgate}, {"dup", p.dup}});
  const ScopedKernelTimer timer(device, k);
  table.swiglu_backward(p);
}

}  // namespace moerun::kernels
