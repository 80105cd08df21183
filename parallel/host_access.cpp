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
  data_ = staging_.data();
  if (!(mode & Read)) return;
  // The copy leaves on the transfer queue once the kernels that wrote the tensor are done, and
  // MPI may read the staging buffer only when the copy's event has completed.
  Device& dev = tensor.device();
  dev.queue_wait(Queue::Transfer, dev.record_event(Queue::Compute));
  dev.copy_device_to_host_async(Queue::Transfer, staging_.data(), tensor.data(), tensor.bytes());
  dev.host_wait(dev.record_event(Queue::Transfer));
}

HostAccess::~HostAccess() {
  if (staging_.empty() || !(mode_ & Write)) return;
  // Kernels after this point read the tensor only after the copy; the staging buffer is freed
  // only after the copy read it.
  Device& dev = tensor_.device();
  dev.copy_host_to_device_async(Queue::Transfer, const_cast<void*>(tensor_.data()), staging_.data(), tensor_.bytes());
  const Event arrived = dev.record_event(Queue::Transfer);
  dev.queue_wait(Queue::Compute, arrived);
  dev.host_wait(arrived);
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
