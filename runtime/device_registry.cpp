#include "runtime/device_registry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <functional>
#include <utility>

#include "runtime/cpu/cpu_device.h"
#include "runtime/error.h"

namespace moerun {

namespace {
// To add a backend: its folder under runtime/, a `private` line in cmake/layers.txt, its
// target linked into moerun_devices (runtime/CMakeLists.txt), and one entry here.
const std::vector<std::pair<std::string, std::function<std::unique_ptr<Device>()>>>& backends() {
  static const std::vector<std::pair<std::string, std::function<std::unique_ptr<Device>()>>> list = {
      {"cpu", [] { return std::make_unique<CpuDevice>(); }},
  };
  return list;
}
}  // namespace

std::vector<std::string> device_names() {
  std::vector<std::string> names;
  for (const auto& [name, make] : backends()) names.push_back(name);
  return names;
}

std::unique_ptr<Device> make_device(const std::string& name) {
  for (const auto& [known, make] : backends())
    if (known == name) return make();
  MOERUN_THROW(ConfigError, "[device] runtime.device = '{}' is not a backend of this build; known: {}", name,
               fmt::join(device_names(), ", "));
}

}  // namespace moerun
