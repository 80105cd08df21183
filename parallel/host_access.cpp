#include "parallel/host_access.h"

#include "runtime/error.h"

namespace moerun {

HostAccess::HostAccess(const Tensor& tensor, Mode mode) : tensor_(tensor), mode_(mode) {
  if (tensor.bytes() == 0) return;
  if (tensor.device().host_accessible()) {
    data_ = const_cast<void*>(tensor.data());
    return;
  }
  staging_.resize(tensor.bytes());
  if (mode & Read) tensor.device().copy_device_to_host(staging_.data(), tensor.data(), tensor.bytes());
  data_ = staging_.data();
}

HostAccess::~HostAccess() {
  if (!staging_.empty() && (mode_ & Write)) {
    tensor_.device().copy_host_to_device(const_cast<void*>(tensor_.data()), staging_.data(), tensor_.bytes());
  }
}

CommSpan HostAccess::span() const {
  switch (tensor_.dtype()) {
    case DType::F32: return {data_, tensor_.numel(), CommType::F32};
    case DType::BF16: return {data_, tensor_.numel(), CommType::BF16};
    case DType::I32: return {data_, tensor_.numel(), CommType::I32};
    case DType::U8: return {data_, tensor_.numel(), CommType::U8};
  }
  MOERUN_THROW(RuntimeError, "[host access] no collective element type for {} tensors", dtype_name(tensor_.dtype()));
}

}  // namespace moerun
