// LayerNorm: learned scale and shift (model.norm = "layernorm"); keeps its statistics for
// backward.
#pragma once

#include "model/norm.h"

namespace moerun {

class LayerNorm final : public Norm {
 public:
  LayerNorm(ParameterStore& params, const std::string& name, std::int64_t width, DType out_dtype);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  void release() override;

 private:
  Parameter& gamma_;
  Parameter& beta_;
  const Tensor* x_ = nullptr;
  DType out_dtype_;
  Tensor mean_, variance_;  // [n]
};

}  // namespace moerun
