// ParameterStore: every trainable tensor of the model with its gradient, name, shape and
// kind (dense, or expert e of layer l). Gradient sync, the optimizer, checkpoints and the
// expert planner iterate it. Initial values depend only on (seed, name), so an expert gets the
// same weights on whichever rank holds it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace moerun {

enum class ParamKind { Dense, Expert };

enum class Init { Normal, Zeros, Ones };

struct Parameter {
  std::string name;  // e.g. "layers.1.moe.experts.3.w1"
  ParamKind kind = ParamKind::Dense;
  int layer = -1;   // expert parameters: the MoE layer
  int expert = -1;  // expert parameters: the global expert id
  bool decay = true;  // AdamW weight decay applies (matrices yes, norms and biases no)
  Tensor value;
  Tensor grad;
};

class ParameterStore {
 public:
  ParameterStore(Device& device, std::uint64_t seed, double init_std);

  // Creates and initializes a parameter (and a zeroed gradient). Names are unique.
  Parameter& add(const std::string& name, Shape shape, Init init, ParamKind kind = ParamKind::Dense, int layer = -1,
                 int expert = -1);
  Parameter& get(const std::string& name);
  bool contains(const std::string& name) const { return by_name_.contains(name); }
  // Frees a parameter (an expert that moved to another rank). Pointers to it become invalid.
  void remove(const std::string& name);
  const std::vector<Parameter*>& all() const { return order_; }
  std::int64_t count_elements() const;
  void zero_grads();
  Device& device() const { return device_; }

 private:
  Device& device_;
  std::uint64_t seed_;
  double init_std_;
  std::map<std::string, std::unique_ptr<Parameter>> by_name_;
  std::vector<Parameter*> order_;  // creation order: deterministic iteration
};

}  // namespace moerun
