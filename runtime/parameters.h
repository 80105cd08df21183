// ParameterStore: every trainable tensor of the model with its gradient, name, shape and
// kind (dense, or expert e of layer l). Gradient sync, the optimizer, checkpoints and the
// expert planner iterate it. Initial values depend only on (seed, name), so an expert gets the
// same weights on whichever rank holds it. Under mixed precision each matrix also has a
// compute copy in the compute dtype (bf16), which the matmuls read; refresh_compute_copies()
// rounds the fp32 master values into it after they change.
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
  Tensor value;         // fp32 master value: what the optimizer updates and checkpoints store
  Tensor grad;          // fp32 gradient accumulation buffer
  Tensor compute_copy;  // matrices under mixed precision: value in the compute dtype; else empty

  // What a matmul reads: the compute copy when there is one, else the master value.
  const Tensor& compute() const { return compute_copy.defined() ? compute_copy : value; }
};

// Model state that training does not differentiate (the aux-free balancing bias): fp32, the
// same on every rank, saved with the model in checkpoints; no gradient, no optimizer moments.
struct Buffer {
  std::string name;  // e.g. "layers.1.moe.router_bias"
  Tensor value;
};

class ParameterStore {
 public:
  // compute_dtype: the dtype matmuls read weights in; bf16 gives every matrix a compute copy.
  ParameterStore(Device& device, std::uint64_t seed, double init_std, DType compute_dtype = DType::F32);

  // Creates and initializes a parameter (and a zeroed gradient). Names are unique.
  Parameter& add(const std::string& name, Shape shape, Init init, ParamKind kind = ParamKind::Dense, int layer = -1,
                 int expert = -1);
  Parameter& get(const std::string& name);
  // Creates a zeroed buffer. Names are unique among parameters and buffers.
  Buffer& add_buffer(const std::string& name, Shape shape);
  const std::vector<Buffer*>& buffers() const { return buffer_order_; }
  bool contains(const std::string& name) const { return by_name_.contains(name); }
  // Frees a parameter (an expert that moved to another rank). Pointers to it become invalid.
  void remove(const std::string& name);
  const std::vector<Parameter*>& all() const { return order_; }
  std::int64_t count_elements() const;
  void zero_grads();
  // Rounds every master value into its compute copy (no-op in fp32). Call after the values
  // change: the optimizer step, a checkpoint load, an expert arriving by migration.
  void refresh_compute_copies();
  DType compute_dtype() const { return compute_dtype_; }
  // Bytes of the compute copies (memory accounting).
  std::int64_t compute_copy_bytes() const;
  Device& device() const { return device_; }

 private:
  Device& device_;
  std::uint64_t seed_;
  double init_std_;
  DType compute_dtype_;
  std::map<std::string, std::unique_ptr<Parameter>> by_name_;
  std::vector<Parameter*> order_;  // creation order: deterministic iteration
  std::map<std::string, std::unique_ptr<Buffer>> buffers_;
  std::vector<Buffer*> buffer_order_;
};

}  // namespace moerun
