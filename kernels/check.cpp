#include "kernels/check.h"

#include "runtime/error.h"

namespace moerun::kernels::detail {

Dispatch table_for(std::string_view kernel, std::initializer_list<const Tensor*> tensors) {
  Device* device = nullptr;
  for (const Tensor* t : tensors) {
    if (t == nullptr) continue;
    MOERUN_CHECK(t->defined(), KernelError, "[{}] an argument tensor is undefined (empty or moved-from)", kernel);
    if (device == nullptr) {
      device = &t->device();
    } else {
      MOERUN_CHECK(&t->device() == device, KernelError,
                   "[{}] tensors live on different devices ({} and {}); copy them to one device first", kernel,
                   device->name(), t->device().name());
    }
  }
  MOERUN_CHECK(device != nullptr, KernelError, "[{}] called without tensors", kernel);
  device->on_kernel(kernel, tensors);  // a compiling backend sees every shape it will run
  return {device->kernels(), *device};
}

void check_present(std::string_view kernel, std::string_view name, const Tensor* t) {
  MOERUN_CHECK(t != nullptr, KernelError, "[{}] missing argument '{}'", kernel, name);
}

void check_dtype(std::string_view kernel, std::string_view name, const Tensor& t, DType dtype) {
  MOERUN_CHECK(t.dtype() == dtype, KernelError, "[{}] {} must be {} but is {} {}", kernel, name, dtype_name(dtype),
               dtype_name(t.dtype()), shape_string(t.shape()));
}

void check_rank(std::string_view kernel, std::string_view name, const Tensor& t, int rank) {
  MOERUN_CHECK(t.rank() == rank, KernelError, "[{}] {} must have rank {} but is {}", kernel, name, rank,
               shape_string(t.shape()));
}

void check_shape(std::string_view kernel, std::string_view name, const Tensor& t, const Shape& shape) {
  MOERUN_CHECK(t.shape() == shape, KernelError, "[{}] {} must be {} but is {}", kernel, name, shape_string(shape),
               shape_string(t.shape()));
}

void check_f32(std::string_view kernel, std::string_view name, const Tensor* t, const Shape& shape) {
  check_present(kernel, name, t);
  check_dtype(kernel, name, *t, DType::F32);
  check_shape(kernel, name, *t, shape);
}

void check_f32(std::string_view kernel, const Shape& shape, std::initializer_list<Named> tensors) {
  for (const Named& t : tensors) check_f32(kernel, t.name, t.tensor, shape);
}

void check_float(std::string_view kernel, std::string_view name, const Tensor* t, const Shape& shape) {
  check_present(kernel, name, t);
  MOERUN_CHECK(is_floating(t->dtype()), KernelError, "[{}] {} must be f32 or bf16 but is {} {}", kernel, name,
               dtype_name(t->dtype()), shape_string(t->shape()));
  check_shape(kernel, name, *t, shape);
}

void check_float(std::string_view kernel, const Shape& shape, std::initializer_list<Named> tensors) {
  for (const Named& t : tensors) check_float(kernel, t.name, t.tensor, shape);
}

void check_float_same(std::string_view kernel, const Shape& shape, std::initializer_list<Named> tensors) {
  check_float(kernel, shape, tensors);
  const Named& first = *tensors.begin();
  for (const Named& t : tensors) check_dtype(kernel, t.name, *t.tensor, first.tensor->dtype());
}

}  // namespace moerun::kernels::detail
