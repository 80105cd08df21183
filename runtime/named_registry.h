// A table of things made by name (backends for runtime.device, routing policies for
// model.router): the names in order, the default first, and a lookup whose failure names the
// config key and lists the known names. One concept for every "chosen by name" seam.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <string>
#include <utility>
#include <vector>

#include "runtime/error.h"

namespace moerun {

template <class Factory>
class NamedRegistry {
 public:
  // config_key: the key that chooses (for the error message), e.g. "runtime.device".
  NamedRegistry(std::string config_key, std::vector<std::pair<std::string, Factory>> entries)
      : key_(std::move(config_key)), entries_(std::move(entries)) {}

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& entry : entries_) out.push_back(entry.first);
    return out;
  }
  bool contains(const std::string& name) const {
    for (const auto& entry : entries_)
      if (entry.first == name) return true;
    return false;
  }
  // The factory registered under `name`; a ConfigError listing the known names otherwise.
  const Factory& at(const std::string& name) const {
    for (const auto& entry : entries_)
      if (entry.first == name) return entry.second;
    MOERUN_THROW(ConfigError, "{} = '{}' is not one of this build's choices: {}", key_, name, fmt::join(names(), ", "));
  }

 private:
  std::string key_;
  std::vector<std::pair<std::string, Factory>> entries_;
};

}  // namespace moerun
