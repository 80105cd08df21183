// A layer-norm layer with learned scale and shift; keeps its statistics for backward.
// Statistics and dx are fp32; the output is in out_dtype (the compute dtype: it feeds matmuls).
#pragma once

#include "runtime/parameters.h"

namespace moerun {

class LayerNorm {
 public:
  LayerNorm(ParameterStore& params, const std::string& name, std::int64_t width, DType out_dtype = DType::F32);
  // x [n, width] must stay alive until backward.
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);  // returns dx; accumulates the parameter gradients
  void release();  // forgets what forward saved

 private:
  Parameter& gamma_;
  Parameter& beta_;
  const Tensor* x_ = nullptr;
  DType out_dtype_;
  Tensor mean_, variance_;  // [n]
};

}  // namespace moerun
