#include "runtime/device_registry.h"

#include <functional>

#include "runtime/cpu/cpu_device.h"
#include "runtime/named_registry.h"
#include "runtime/strict/strict_device.h"

namespace moerun {

namespace {
// To add a backend: its folder under runtime/, a `private` line in cmake/layers.txt, its
// target linked into moerun_devices (runtime/CMakeLists.txt), and one entry here.
const NamedRegistry<std::function<std::unique_ptr<Device>()>>& backends() {
  static const NamedRegistry<std::function<std::unique_ptr<Device>()>> registry(
      "runtime.device", {{"cpu", [] { return std::make_unique<CpuDevice>(); }},
                         // the tests' accelerator stand-in (runtime/strict/strict_device.h)
                         {"strict", [] { return std::make_unique<StrictDevice>(); }}});
  return registry;
}
}  // namespace

std::vector<std::string> device_names() { return backends().names(); }

std::unique_ptr<Device> make_device(const std::string& name) { return backends().at(name)(); }

}  // namespace moerun
