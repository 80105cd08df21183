#include "kernels/softmax.h"

#include "kernels/check.h"

namespace moerun::kernels {
using detail::check_present;

void softmax_forward(const SoftmaxArgs& p) {
  constexpr std::string_view k = "softmax_forward";
  const auto [table, device] = detail::table_for(k, {p.x, p.out});
  check_present(k, "x", p.x);
  detail::check_rank(k, "x", *p.x, 2);
  detail::check_float(k, p.x->shape(), {{"x", p.x}, {"out", p.out}});
  const ScopedKernelTimer timer(device, k);
  table.softmax_forward(p);
}

void softmax_backward(const SoftmaxArgs& p) {
  constexpr std::string_view k = "softmax_backward";
  const auto [table, device] = detail::table_for(k, {p.y, p.dy, p.out});
  check_present(k, "y", p.y);
  detail::check_rank(k, "y", *p.y, 2);
  detail::check_float(k, p.y->shape(), {{"y", p.y}, {"dy", p.dy}, {"out", p.out}});
  const ScopedKernelTimer timer(device, k);
  table.softmax_backward(p);
}

}  // namespace moerun::kernels
