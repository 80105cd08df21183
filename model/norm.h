// The normalization of a block's input (and of the final hidden state), chosen by model.norm:
// LayerNorm (layer_norm.h: scale and shift, mean and variance) or RMSNorm (rms_norm.h: scale
// only, as Llama, Mixtral and DeepSeek use). Statistics and dx are fp32; the output is in the
// compute dtype (it feeds matmuls). Keeps what its backward needs.
#pragma once

#include <memory>
#include <string>

#include "model/model_config.h"
#include "runtime/parameters.h"

namespace moerun {

class Norm {
 public:
  virtual ~Norm() = default;
  // x [n, width] must stay alive until backward.
  virtual Tensor forward(const Tensor& x) = 0;
  virtual Tensor backward(const Tensor& dy) = 0;  // returns dx; accumulates the parameter gradients
  virtual void release() = 0;                     // forgets what forward saved
};

// Registers the norm's parameters "<name>.gamma" (and "<name>.beta" for LayerNorm).
std::unique_ptr<Norm> make_norm(NormKind kind, ParameterStore& params, const std::string& name, std::int64_t width,
                                DType out_dtype);

}  // namespace moerun
