// RMSNorm: y = x / sqrt(mean(x^2) + eps) * gamma, a learned scale and no shift (model.norm =
// "rmsnorm"). Keeps 1 / rms per row for backward.
#pragma once

#include "model/norm.h"

namespace moerun {

class RmsNorm final : public Norm {
 public:
  RmsNorm(ParameterStore& params, const std::string& name, std::int64_t width, DType out_dtype);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  void release() override;

 private:
  Parameter& gamma_;
  DType out_dtype_;
  const Tensor* x_ = nullptr;
  Tensor rstd_;  // [n]
};

}  // namespace moerun
