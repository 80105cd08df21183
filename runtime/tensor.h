// Tensor: a shape, a dtype and a buffer on a Device. An owning Tensor frees its buffer;
// a view (rows(), reshaped()) borrows its parent's and must not outlive it. Move-only, so
// that every device buffer has exactly one owner. Does not own any math: see kernels/.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/dtype.h"

namespace moerun {

using Shape = std::vector<std::int64_t>;

std::string shape_string(const Shape& shape);  // "[3, 4]"
std::int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  // Allocates an uninitialized tensor on `device`.
  Tensor(Device& device, Shape shape, DType dtype = DType::F32);
  static Tensor zeros(Device& device, Shape shape, DType dtype = DType::F32);
  // Float values into an f32 or bf16 tensor (rounded to nearest even).
  static Tensor from_host(Device& device, Shape shape, std::span<const float> values, DType dtype = DType::F32);
  static Tensor from_host(Device& device, Shape shape, std::span<const std::int32_t> values);

  ~Tensor();
  Tensor(Tensor&& other) noexcept;
  Tensor& operator=(Tensor&& other) noexcept;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  bool defined() const { return device_ != nullptr; }
  Device& device() const;
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  std::int64_t dim(int i) const;  // negative i counts from the end
  std::int64_t numel() const { return shape_numel(shape_); }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  bool is_view() const { return !owning_; }

  // Raw device address, for backends, MPI and I/O; never dereference it above runtime/.
  void* data() { return data_; }
  const void* data() const { return data_; }

  // A view of rows [begin, end) along the first dimension, no copy.
  Tensor rows(std::int64_t begin, std::int64_t end) const;
  // A view of the same buffer with another shape of equal element count.
  Tensor reshaped(Shape shape) const;
  // A non-owning view of the whole tensor.
  Tensor view() const { return reshaped(shape_); }

  void fill(float value);
  void zero();
  void copy_from(const Tensor& src);  // same shape and dtype, any device pair
  void copy_from_host(std::span<const float> values);  // f32 or bf16 (rounded) tensors
  void copy_from_host(std::span<const std::int32_t> values);
  std::vector<float> to_host() const;            // f32 or bf16 tensors
  std::vector<std::int32_t> to_host_i32() const;  // i32 tensors

 private:
  void release();

  Device* device_ = nullptr;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::F32;
  bool owning_ = false;
  std::size_t allocated_bytes_ = 0;
};

}  // namespace moerun
