#include "runtime/parameters.h"

#include <algorithm>
#include <random>

#include "runtime/error.h"
#include "runtime/seed.h"

namespace moerun {

ParameterStore::ParameterStore(Device& device, std::uint64_t seed, double init_std)
    : device_(device), seed_(seed), init_std_(init_std) {}

Parameter& ParameterStore::add(const std::string& name, Shape shape, Init init, ParamKind kind, int layer, int expert) {
  MOERUN_CHECK(!by_name_.contains(name), RuntimeError, "[parameters] '{}' registered twice", name);
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
  Parameter& ref = *p;
  order_.push_back(p.get());
  by_name_.emplace(name, std::move(p));
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

}  // namespace moerun
