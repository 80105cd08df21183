#include "model/norm.h"

#include "model/layer_norm.h"
#include "model/rms_norm.h"

namespace moerun {

std::unique_ptr<Norm> make_norm(NormKind kind, ParameterStore& params, const std::string& name, std::int64_t width,
                                DType out_dtype) {
  if (kind == NormKind::RmsNorm) return std::make_unique<RmsNorm>(params, name, width, out_dtype);
  return std::make_unique<LayerNorm>(params, name, width, out_dtype);
}

}  // namespace moerun
