// The device registry: backends by name (config key runtime.device). The one place that knows
// which backends exist; everything above holds a Device& and never learns which it got. The
// test suite takes its device from here too (MOERUN_TEST_DEVICE, tests/test_device.h), so the
// whole suite runs on another backend by setting one variable.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"

namespace moerun {

// Names of the registered backends, the default first.
std::vector<std::string> device_names();
// A new device of that backend; an unknown name throws a ConfigError listing the known ones.
std::unique_ptr<Device> make_device(const std::string& name);

}  // namespace moerun
