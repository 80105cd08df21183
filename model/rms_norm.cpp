#include "model/rms_norm.h"

#include "kernels/norm.h"

namespace moerun {

RmsNorm::RmsNorm(ParameterStore& params, const std::string& name, std::int64_t width, DType out_dtype)
    : gamma_(params.add(name + ".gamma", {width}, Init::Ones)), out_dtype_(out_dtype) {}

Tensor RmsNorm::forward(const Tensor& x) {
  x_ = &x;
  rstd_ = Tensor(x.device(), {x.dim(0)});
  Tensor y(x.device(), x.shape(), out_dtype_);
  kernels::rms_norm_forward({.x = &x, .gamma = &gamma_.value, .rstd = &rstd_, .y = &y});
  return y;
}

Tensor RmsNorm::backward(const Tensor& dy) {
  Tensor dx(dy.device(), x_->shape(), x_->dtype());
  kernels::rms_norm_backward({.x = x_, .gamma = &gamma_.value, .rstd = &rstd_, .dy = &dy, .dx = &dx,
                              .dgamma = &gamma_.grad, .accumulate_param_grads = true});
  release();
  return dx;
}

void RmsNorm::release() {
  rstd_ = Tensor();
  x_ = nullptr;
}

}  // namespace moerun
