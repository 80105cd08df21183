// The device the tests run on, from one place: the backend named by MOERUN_TEST_DEVICE (a name
// of runtime/device_registry.h; default cpu). `MOERUN_TEST_DEVICE=<backend> ctest` runs the
// whole suite on another backend. Only tests of a backend itself (its primitive cache, its
// memory cache) name that backend's class.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>

#include "runtime/device_registry.h"

namespace moerun::test {

inline std::string test_device_name() {
  const char* name = std::getenv("MOERUN_TEST_DEVICE");
  return name != nullptr && *name != '\0' ? name : device_names().front();
}

// A device of its own (for tests that count memory or need two devices); converts to Device&.
class TestDevice {
 public:
  TestDevice() : device_(make_device(test_device_name())) {}
  operator Device&() { return *device_; }
  Device* operator->() { return device_.get(); }
  Device& get() { return *device_; }

 private:
  std::unique_ptr<Device> device_;
};

// One device shared by the tests of a binary.
inline Device& device() {
  static TestDevice dev;
  return dev;
}

}  // namespace moerun::test
