// A layer-norm layer with learned scale and shift; keeps its statistics for backward.
#pragma once

#include "runtime/parameters.h"

namespace moerun {

class LayerNorm {
 public:
  LayerNorm(ParameterStore& params, const std::string& name, std::int64_t width);
  // x [n, width] must stay alive until backward.
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);  // returns dx; accumulates the parameter gradients
  void release();  // forgets what forward saved

 private:
  Parameter& gamma_;
  Parameter& beta_;
  const Tensor* x_ = nullptr;
  Tensor mean_, variance_;  // [n]
};

}  // namespace moerun
