#include "model/layer_norm.h"

#include "kernels/norm.h"

namespace moerun {

LayerNorm::LayerNorm(ParameterStore& params, const std::string& name, std::int64_t width, DType out_dtype)
    : gamma_(params.add(name + ".gamma", {width}, Init::Ones)),
      beta_(params.add(name + ".beta", {width}, Init::Zeros)),
      out_dtype_(out_dtype) {}

Tensor LayerNorm::forward(const Tensor& x) {
  x_ = &x;
  Device& dev = x.device();
  mean_ = Tensor(dev, {x.dim(0)});
  variance_ = Tensor(dev, {x.dim(0)});
  Tensor y(dev, x.shape(), out_dtype_);  // feeds matmuls: the compute dtype
  kernels::layer_norm_forward(
      {.x = &x, .gamma = &gamma_.value, .beta = &beta_.value, .mean = &mean_, .variance = &variance_, .y = &y});
  return y;
}

Tensor LayerNorm::backward(const Tensor& dy) {
  Tensor dx(dy.device(), x_->shape(), x_->dtype());
  kernels::layer_norm_backward({.x = x_, .gamma = &gamma_.value, .beta = &beta_.value, .mean = &mean_,
                                .variance = &variance_, .dy = &dy, .dx = &dx, .dgamma = &gamma_.grad,
                                .dbeta = &beta_.grad, .accumulate_param_grads = true});
  mean_ = Tensor();
  variance_ = Tensor();
  x_ = nullptr;
  return dx;
}

void LayerNorm::release() {
  mean_ = Tensor();
  variance_ = Tensor();
  x_ = nullptr;
}

}  // namespace moerun
