// Readout: the values the host needs from the device once per step (the losses, the tokens
// routed and kept per expert, the gradients' squares and non-finite counts), written by
// kernels into slots of one device buffer during the step and read in one device->host copy
// at its end. On an accelerator that is one transfer per step instead of one per value
// (docs/device.md); producers reserve their slots once and add into them.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace moerun {

class Readout {
 public:
  explicit Readout(Device& device) : device_(device) {}
  // Reserves `n` slots before the buffer is first used; returns the first one's position.
  std::int64_t reserve(std::int64_t n);
  // The device view f32 [n] of slots [first, first + n).
  Tensor slots(std::int64_t first, std::int64_t n);
  // Zeroes every slot, on the device.
  void clear();
  // Copies every slot to the host in one copy; value() returns them until the next read.
  void read();
  double value(std::int64_t slot) const;

 private:
  Tensor& buffer();

  Device& device_;
  std::int64_t size_ = 0;
  Tensor values_;             // f32 [size_], allocated at first use
  std::vector<float> host_;  // the last read
};

}  // namespace moerun
