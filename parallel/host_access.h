// The one place that knows whether MPI can read device memory. When the device is
// host-accessible (the CPU backend) MPI gets the tensor's own pointer; otherwise the data is
// staged through a host buffer with the device's asynchronous copies, ordered by events: the
// read waits for the kernels that wrote the tensor and MPI waits for the copy; the write-back
// makes later kernels wait for it (docs/device.md, "Queues and events").
#pragma once

#include <vector>

#include "parallel/process_group.h"
#include "runtime/tensor.h"

namespace moerun {

class HostAccess {
 public:
  enum Mode { Read = 1, Write = 2, ReadWrite = 3 };
  // Bytes [skip_begin, skip_end) are neither staged nor written back (a rank's own block of an
  // exchange, which stays on the device); the staging buffer holds garbage there.
  HostAccess(const Tensor& tensor, Mode mode, std::size_t skip_begin = 0, std::size_t skip_end = 0);
  ~HostAccess();  // copies staged data back to the device for Write modes
  HostAccess(const HostAccess&) = delete;
  HostAccess& operator=(const HostAccess&) = delete;
  void* data() { return data_; }
  // The tensor's elements, host-reachable, typed for a collective.
  CommSpan span() const;

 private:
  const Tensor& tensor_;
  Mode mode_;
  std::size_t skip_begin_, skip_end_;
  void* data_ = nullptr;
  std::vector<char> staging_;
};

}  // namespace moerun
