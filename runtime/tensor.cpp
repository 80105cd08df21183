#include "runtime/tensor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <utility>

#include "runtime/bfloat16.h"
#include "runtime/error.h"

namespace moerun {

std::string shape_string(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

std::int64_t shape_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

Tensor::Tensor(Device& device, Shape shape, DType dtype)
    : device_(&device), shape_(std::move(shape)), dtype_(dtype), owning_(true) {
  for (auto d : shape_) {
    MOERUN_CHECK(d >= 0, DeviceError, "[tensor] negative dimension in shape {}", shape_string(shape_));
  }
  allocated_bytes_ = bytes();
  data_ = device_->allocate(allocated_bytes_);
}

Tensor Tensor::zeros(Device& device, Shape shape, DType dtype) {
  Tensor t(device, std::move(shape), dtype);
  t.zero();
  return t;
}

Tensor Tensor::from_host(Device& device, Shape shape, std::span<const float> values, DType dtype) {
  Tensor t(device, std::move(shape), dtype);
  t.copy_from_host(values);
  return t;
}

Tensor Tensor::from_host(Device& device, Shape shape, std::span<const std::int32_t> values) {
  Tensor t(device, std::move(shape), DType::I32);
  t.copy_from_host(values);
  return t;
}

Tensor::~Tensor() { release(); }

void Tensor::release() {
  if (owning_ && device_ != nullptr) device_->deallocate(data_, allocated_bytes_);
  device_ = nullptr;
  data_ = nullptr;
  owning_ = false;
  allocated_bytes_ = 0;
}

Tensor::Tensor(Tensor&& o) noexcept
    : device_(std::exchange(o.device_, nullptr)),
      data_(std::exchange(o.data_, nullptr)),
      shape_(std::move(o.shape_)),
      dtype_(o.dtype_),
      owning_(std::exchange(o.owning_, false)),
      allocated_bytes_(std::exchange(o.allocated_bytes_, 0)) {}

Tensor& Tensor::operator=(Tensor&& o) noexcept {
  if (this != &o) {
    release();
    device_ = std::exchange(o.device_, nullptr);
    data_ = std::exchange(o.data_, nullptr);
    shape_ = std::move(o.shape_);
    dtype_ = o.dtype_;
    owning_ = std::exchange(o.owning_, false);
    allocated_bytes_ = std::exchange(o.allocated_bytes_, 0);
  }
  return *this;
}

Device& Tensor::device() const {
  MOERUN_CHECK(device_ != nullptr, DeviceError, "[tensor] use of an undefined (moved-from or empty) tensor");
  return *device_;
}

std::int64_t Tensor::dim(int i) const {
  const int r = rank();
  const int j = i < 0 ? i + r : i;
  MOERUN_CHECK(j >= 0 && j < r, DeviceError, "[tensor] dim({}) of a rank-{} tensor {}", i, r, shape_string(shape_));
  return shape_[static_cast<std::size_t>(j)];
}

Tensor Tensor::rows(std::int64_t begin, std::int64_t end) const {
  MOERUN_CHECK(rank() >= 1, DeviceError, "[tensor] rows() of a rank-0 tensor");
  MOERUN_CHECK(0 <= begin && begin <= end && end <= shape_[0], DeviceError,
               "[tensor] rows({}, {}) out of range for shape {}", begin, end, shape_string(shape_));
  Tensor v;
  v.device_ = device_;
  v.dtype_ = dtype_;
  v.shape_ = shape_;
  v.shape_[0] = end - begin;
  const std::int64_t row_elems = shape_[0] == 0 ? 0 : numel() / shape_[0];
  v.data_ = static_cast<char*>(data_) + static_cast<std::size_t>(begin * row_elems) * dtype_size(dtype_);
  return v;
}

Tensor Tensor::reshaped(Shape shape) const {
  MOERUN_CHECK(shape_numel(shape) == numel(), DeviceError, "[tensor] cannot reshape {} ({} elements) to {}",
               shape_string(shape_), numel(), shape_string(shape));
  Tensor v;
  v.device_ = device_;
  v.dtype_ = dtype_;
  v.shape_ = std::move(shape);
  v.data_ = data_;
  return v;
}

void Tensor::fill(float value) {
  MOERUN_CHECK(is_floating(dtype_), DeviceError, "[tensor] fill(float) on a {} tensor", dtype_name(dtype_));
  if (dtype_ == DType::BF16) return copy_from_host(std::vector<float>(static_cast<std::size_t>(numel()), value));
  std::uint32_t word;
  static_assert(sizeof(word) == sizeof(value));
  std::memcpy(&word, &value, sizeof(word));
  device().fill32(data_, word, static_cast<std::size_t>(numel()));
}

void Tensor::zero() {
  if (bytes() % 4 != 0) {  // an odd number of bf16 values
    const std::vector<char> zeros(bytes(), 0);
    return device().copy_host_to_device(data_, zeros.data(), bytes());
  }
  device().fill32(data_, 0u, bytes() / 4);
}

void Tensor::copy_from(const Tensor& src) {
  MOERUN_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_, DeviceError,
               "[tensor] copy_from: source is {} {} but destination is {} {}", dtype_name(src.dtype_),
               shape_string(src.shape_), dtype_name(dtype_), shape_string(shape_));
  if (&src.device() == &device()) {
    device().copy_device_to_device(data_, src.data_, bytes());
  } else {
    std::vector<char> staging(bytes());
    src.device().copy_device_to_host(staging.data(), src.data_, bytes());
    device().copy_host_to_device(data_, staging.data(), bytes());
  }
}

void Tensor::copy_from_host(std::span<const float> values) {
  MOERUN_CHECK(is_floating(dtype_) && static_cast<std::int64_t>(values.size()) == numel(), DeviceError,
               "[tensor] copy_from_host: {} floats for a {} tensor of shape {}", values.size(), dtype_name(dtype_),
               shape_string(shape_));
  if (dtype_ == DType::BF16) {
    std::vector<bfloat16> rounded(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) rounded[i] = float_to_bf16(values[i]);
    return device().copy_host_to_device(data_, rounded.data(), bytes());
  }
  device().copy_host_to_device(data_, values.data(), bytes());
}

void Tensor::copy_from_host(std::span<const std::int32_t> values) {
  MOERUN_CHECK(dtype_ == DType::I32 && static_cast<std::int64_t>(values.size()) == numel(), DeviceError,
               "[tensor] copy_from_host: {} int32 for a {} tensor of shape {}", values.size(), dtype_name(dtype_),
               shape_string(shape_));
  device().copy_host_to_device(data_, values.data(), bytes());
}

std::vector<float> Tensor::to_host() const {
  MOERUN_CHECK(is_floating(dtype_), DeviceError, "[tensor] to_host() of a {} tensor; use to_host_i32()", dtype_name(dtype_));
  std::vector<float> out(static_cast<std::size_t>(numel()));
  if (dtype_ == DType::BF16) {
    std::vector<bfloat16> stored(out.size());
    device().copy_device_to_host(stored.data(), data_, bytes());
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_float(stored[i]);
    return out;
  }
  device().copy_device_to_host(out.data(), data_, bytes());
  return out;
}

std::vector<std::int32_t> Tensor::to_host_i32() const {
  MOERUN_CHECK(dtype_ == DType::I32, DeviceError, "[tensor] to_host_i32() of a {} tensor", dtype_name(dtype_));
  std::vector<std::int32_t> out(static_cast<std::size_t>(numel()));
  device().copy_device_to_host(out.data(), data_, bytes());
  return out;
}

}  // namespace moerun
