// Router: the routing policy of one MoE layer, as one unit. Forward: scores from the router
// weights, each token's top-k experts and gate values, and the balancing losses, all on the
// device. Backward: the gradient of the kept gates and of the balancing losses into the router
// weights and the layer input. The MoE layer does the rest (capacity and layout, dispatch,
// experts, combine).
//
// Policies are chosen by name (model.router). To add one: a file model/<name>_router.cpp
// with a Router subclass and its factory, one line in router.cpp's table, and the file in
// model/CMakeLists.txt.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "runtime/parameters.h"

namespace moerun {

struct RouterOutput {
  Tensor index;  // i32 [tokens, top_k]: each token's experts
  Tensor gates;  // [tokens * top_k, 1]: every choice's gate, row t * top_k + j
};

class Router {
 public:
  virtual ~Router() = default;
  // h [tokens, d], kept alive by the caller until backward. Adds this micro-batch's balancing
  // losses (coefficients included) into losses f32 [2] = {aux, z}, on the device.
  virtual const RouterOutput& forward(const Tensor& h, Tensor& losses) = 0;
  // dgates [tokens * top_k, 1]: the loss gradient of every choice's gate (zero for dropped
  // copies). Adds the router weights' gradient, and the gradient with respect to h into
  // dh [tokens, d]. aux_scale weighs this micro-batch's balancing losses in the total loss.
  virtual void backward(const Tensor& dgates, double aux_scale, Tensor& dh) = 0;
  // Forgets what forward saved.
  virtual void release() = 0;
  // Once per optimizer step, after the update: the step's token-copies routed to each expert,
  // summed over the world (every rank passes the same counts). Aux-free balancing moves its
  // selection bias here; other policies ignore it.
  virtual void after_step(const std::vector<std::int64_t>& routed_per_expert) { (void)routed_per_expert; }
};

// The registered policies, the default first.
std::vector<std::string> router_names();
// Registers the router's parameters ("layers.<layer>.moe.router...") in `params`. An unknown
// name is a ConfigError listing the known ones.
std::unique_ptr<Router> make_router(const std::string& name, ParameterStore& params, const ModelConfig& config, int layer);

}  // namespace moerun
