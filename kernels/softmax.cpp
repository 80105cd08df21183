#include "kernels/softmax.h"

#include "kernels/check.h"

namespace moerun::kernels {
using detail::check_f32;
using detail::check_present;

void softmax_forward(const SoftmaxArgs& p) {
  const auto [table, device] = detail::table_for("softmax_forward", {p.x, p.out});
  check_present("softmax_forward", "x", p.x);
  detail::check_rank("softmax_forward", "x", *p.x, 2);
  check_f32("softmax_forward", "x", p.x, p.x->shape());
  check_f32("softmax_forward", "out", p.out, p.x->shape());
  const ScopedKernelTimer timer(device, "softmax_forward");
  table.softmax_forward(p);
}

void softmax_backward(const SoftmaxArgs& p) {
  const auto [table, device] = detail::table_for("softmax_backward", {p.y, p.dy, p.out});
  check_present("softmax_backward", "y", p.y);
  detail::check_rank("softmax_backward", "y", *p.y, 2);
  check_f32("softmax_backward", "y", p.y, p.y->shape());
  check_f32("softmax_backward", "dy", p.dy, p.y->shape());
  check_f32("softmax_backward", "out", p.out, p.y->shape());
  const ScopedKernelTimer timer(device, "softmax_backward");
  table.softmax_backward(p);
}

}  // namespace moerun::kernels
