// The one place that knows whether MPI can read device memory. When the device is
// host-accessible (the CPU backend) MPI gets the tensor's own pointer; otherwise the data is
// staged through a host buffer with the device's copy calls (and copied back when MPI wrote).
#pragma once

#include <vector>

#include "parallel/process_group.h"
#include "runtime/tensor.h"

namespace moerun {

class HostAccess {
 public:
  enum Mode { Read = 1, Write = 2, ReadWrite = 3 };
  HostAccess(const Tensor& tensor, Mode mode);
  ~HostAccess();  // copies staged data back to the device for Write modes
  HostAccess(const HostAccess&) = delete;
  HostAccess& operator=(const HostAccess&) = delete;
  void* data() { return data_; }
  // The tensor's elements, host-reachable, typed for a collective.
  CommSpan span() const;

 private:
  const Tensor& tensor_;
  Mode mode_;
  void* data_ = nullptr;
  std::vector<char> staging_;
};

}  // namespace moerun
