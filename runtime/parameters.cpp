#include "runtime/parameters.h"

#include <algorithm>
#include <random>

#include "runtime/error.h"
#include "runtime/kernel_table.h"
#include "runtime/seed.h"

namespace moerun {

namespace {
// The backend's convert kernel, called through its table (runtime/ sits below kernels/).
void round_into_copy(Parameter& p) { p.value.device().kernels().convert(p.value, p.compute_copy); }
}  // namespace

ParameterStore::ParameterStore(Device& device, std::uint64_t seed, double init_std, DType compute_dtype)
    : device_(device), seed_(seed), init_std_(init_std), compute_dtype_(compute_dtype) {
  MOERUN_CHECK(is_floating(compute_dtype), RuntimeError, "[parameters] compute dtype {} is not f32 or bf16",
               dtype_name(compute_dtype));
}

Parameter& ParameterStore::add(const std::string& name, Shape shape, Init init, ParamKind kind, int layer, int expert) {
  MOERUN_CHECK(!by_name_.contains(name) && !buffers_.contains(name), RuntimeError, "[parameters] '{}' registered twice",
               name);
  auto p = std::make_unique<Parameter>();
  p->name = name;
  p->kind = kind;
  p->layer = layer;
  p->expert = expert;
  p->decay = shape.size() >= 2;
  std::vector<float> values(static_cast<std::size_t>(shape_numel(shape)));
  if (init == Init::Normal) {
    std::mt19937_64 rng(mix_seed(seed_, name));
    std::normal_distribution<double> dist(0.0, init_std_);
    for (float& v : values) v = static_cast<float>(dist(rng));
  } else {
    std::fill(values.begin(), values.end(), init == Init::Ones ? 1.0f : 0.0f);
  }
  p->value = Tensor::from_host(device_, shape, values);
  p->grad = Tensor::zeros(device_, shape);
  if (compute_dtype_ != DType::F32 && shape.size() == 2) {
    p->compute_copy = Tensor(device_, shape, compute_dtype_);
    round_into_copy(*p);
  }
  Parameter& ref = *p;
  order_.push_back(p.get());
  by_name_.emplace(name, std::move(p));
  return ref;
}

Buffer& ParameterStore::add_buffer(const std::string& name, Shape shape) {
  MOERUN_CHECK(!by_name_.contains(name) && !buffers_.contains(name), RuntimeError, "[parameters] '{}' registered twice",
               name);
  auto b = std::make_unique<Buffer>();
  b->name = name;
  b->value = Tensor::zeros(device_, shape);
  Buffer& ref = *b;
  buffer_order_.push_back(b.get());
  buffers_.emplace(name, std::move(b));
  return ref;
}

Parameter& ParameterStore::get(const std::string& name) {
  auto it = by_name_.find(name);
  MOERUN_CHECK(it != by_name_.end(), RuntimeError, "[parameters] no parameter named '{}'", name);
  return *it->second;
}

void ParameterStore::remove(const std::string& name) {
  auto it = by_name_.find(name);
  MOERUN_CHECK(it != by_name_.end(), RuntimeError, "[parameters] cannot remove '{}': no such parameter", name);
  order_.erase(std::find(order_.begin(), order_.end(), it->second.get()));
  by_name_.erase(it);
}

std::int64_t ParameterStore::count_elements() const {
  std::int64_t n = 0;
  for (const Parameter* p : order_) n += p->value.numel();
  return n;
}

void ParameterStore::zero_grads() {
  for (Parameter* p : order_) p->grad.zero();
}

void ParameterStore::refresh_compute_copies() {
  for (Parameter* p : order_)
    if (p->compute_copy.defined()) round_into_copy(*p);
}

std::int64_t ParameterStore::compute_copy_bytes() const {
  std::int64_t bytes = 0;
  for (const Parameter* p : order_)
    if (p->compute_copy.defined()) bytes += static_cast<std::int64_t>(p->compute_copy.bytes());
  return bytes;
}

}  // namespace moerun
