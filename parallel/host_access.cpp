#include "parallel/host_access.h"

#include "runtime/error.h"

namespace moerun {

namespace {
// The staged ranges of a tensor of `bytes`: all of it but [skip_begin, skip_end).
template <class Fn>
void for_each_staged(std::size_t bytes, std::size_t skip_begin, std::size_t skip_end, Fn&& fn) {
  if (skip_end <= skip_begin) return fn(std::size_t{0}, bytes);
  if (skip_begin > 0) fn(std::size_t{0}, skip_begin);
  if (skip_end < bytes) fn(skip_end, bytes - skip_end);
}
}  // namespace

HostAccess::HostAccess(const Tensor& tensor, Mode mode, std::size_t skip_begin, std::size_t skip_end)
    : tensor_(tensor), mode_(mode), skip_begin_(skip_begin), skip_end_(skip_end) {
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
  const auto* src = static_cast<const char*>(tensor.data());
  for_each_staged(tensor.bytes(), skip_begin_, skip_end_, [&](std::size_t at, std::size_t n) {
    dev.copy_device_to_host_async(Queue::Transfer, staging_.data() + at, src + at, n);
  });
  dev.host_wait(dev.record_event(Queue::Transfer));
}

HostAccess::~HostAccess() {
  if (staging_.empty() || !(mode_ & Write)) return;
  // Kernels after this point read the tensor only after the copy; the staging buffer is freed
  // only after the copy read it.
  Device& dev = tensor_.device();
  auto* dst = static_cast<char*>(const_cast<void*>(tensor_.data()));
  for_each_staged(tensor_.bytes(), skip_begin_, skip_end_, [&](std::size_t at, std::size_t n) {
    dev.copy_host_to_device_async(Queue::Transfer, dst + at, staging_.data() + at, n);
  });
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
