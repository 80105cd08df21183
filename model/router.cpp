#include "model/router.h"

#include <functional>

#include "runtime/named_registry.h"

namespace moerun {

// Each policy's factory, defined in its own file.
std::unique_ptr<Router> make_softmax_top_k_router(ParameterStore& params, const ModelConfig& config, int layer);

namespace {
using RouterFactory = std::function<std::unique_ptr<Router>(ParameterStore&, const ModelConfig&, int)>;

const NamedRegistry<RouterFactory>& policies() {
  static const NamedRegistry<RouterFactory> registry("model.router", {{"softmax_topk", make_softmax_top_k_router}});
  return registry;
}
}  // namespace

std::vector<std::string> router_names() { return policies().names(); }

std::unique_ptr<Router> make_router(const std::string& name, ParameterStore& params, const ModelConfig& config, int layer) {
  return policies().at(name)(params, config, layer);
}

}  // namespace moerun
