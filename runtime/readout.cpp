#include "runtime/readout.h"

#include "runtime/error.h"

namespace moerun {

std::int64_t Readout::reserve(std::int64_t n) {
  MOERUN_CHECK(!values_.defined(), RuntimeError, "[readout] {} slots reserved after the buffer's first use", n);
  const std::int64_t first = size_;
  size_ += n;
  return first;
}

Tensor& Readout::buffer() {
  if (!values_.defined()) values_ = Tensor::zeros(device_, {std::max<std::int64_t>(size_, 1)});
  return values_;
}

Tensor Readout::slots(std::int64_t first, std::int64_t n) {
  MOERUN_CHECK(first >= 0 && n >= 0 && first + n <= size_, RuntimeError, "[readout] slots [{}, {}) of {}", first, first + n,
               size_);
  return buffer().rows(first, first + n);
}

void Readout::clear() { buffer().fill(0.0f); }

void Readout::read() { host_ = buffer().to_host(); }

double Readout::value(std::int64_t slot) const {
  MOERUN_CHECK(slot >= 0 && slot < static_cast<std::int64_t>(host_.size()), RuntimeError,
               "[readout] slot {} read before the buffer was (of {} slots)", slot, host_.size());
  return double(host_[static_cast<std::size_t>(slot)]);
}

}  // namespace moerun
