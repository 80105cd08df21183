// Argument checks shared by the kernel front-ends: one device, the right dtype, the
// right shapes. Each failure throws KernelError naming the kernel and the shapes.
#pragma once

#include <initializer_list>
#include <string_view>

#include "runtime/kernel_table.h"
#include "runtime/kernel_profile.h"

namespace moerun::kernels::detail {

// The device all arguments live on and its kernel table.
struct Dispatch {
  const KernelTable& table;
  Device& device;
};

// All non-null tensors must be defined and on one device; returns it with its table.
Dispatch table_for(std::string_view kernel, std::initializer_list<const Tensor*> tensors);

void check_present(std::string_view kernel, std::string_view name, const Tensor* t);
void check_dtype(std::string_view kernel, std::string_view name, const Tensor& t, DType dtype);
void check_rank(std::string_view kernel, std::string_view name, const Tensor& t, int rank);
void check_shape(std::string_view kernel, std::string_view name, const Tensor& t, const Shape& shape);
// Required, f32 and of the given shape.
void check_f32(std::string_view kernel, std::string_view name, const Tensor* t, const Shape& shape);
// Each named tensor required, f32 and of `shape` (element-wise kernels' operands).
struct Named {
  std::string_view name;
  const Tensor* tensor;
};
void check_f32(std::string_view kernel, const Shape& shape, std::initializer_list<Named> tensors);
// Required, f32 or bf16 (each may differ), and of `shape`.
void check_float(std::string_view kernel, const Shape& shape, std::initializer_list<Named> tensors);
void check_float(std::string_view kernel, std::string_view name, const Tensor* t, const Shape& shape);
// Required, of `shape`, and all of one floating dtype (f32 or bf16).
void check_float_same(std::string_view kernel, const Shape& shape, std::initializer_list<Named> tensors);

}  // namespace moerun::kernels::detail
