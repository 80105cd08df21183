// Byte counts as people read them in messages and logs: "812.0 B", "12.3 MiB", "21.2 GiB".
#pragma once

#include <fmt/format.h>

#include <string>

namespace moerun {

inline std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  return fmt::format("{:.1f} {}", bytes, units[u]);
}

}  // namespace moerun
