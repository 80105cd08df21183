// PrimitiveCache: oneDNN primitives keyed by (kind, shapes, attributes), created once and
// reused, so that steady-state training creates none. Counts creations for the test that
// checks it and for the benchmark.
#pragma once

#include <dnnl.hpp>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>

namespace moerun {

class PrimitiveCache {
 public:
  // Returns the primitive stored under `key`, creating it with make() on first use.
  template <class Make>
  dnnl::primitive& get(const std::string& key, Make&& make) {
    auto it = primitives_.find(key);
    if (it == primitives_.end()) {
      it = primitives_.emplace(key, std::forward<Make>(make)()).first;
      ++created_;
    }
    return it->second;
  }
  std::int64_t created() const { return created_; }
  std::size_t size() const { return primitives_.size(); }

 private:
  std::unordered_map<std::string, dnnl::primitive> primitives_;
  std::int64_t created_ = 0;
};

}  // namespace moerun
