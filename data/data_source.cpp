#include "data/data_source.h"

namespace moerun {

void TokenBatch::resize(std::int64_t n, std::int64_t t) {
  sequences = n;
  seq_len = t;
  inputs.assign(static_cast<std::size_t>(n * t), 0);
  targets.assign(static_cast<std::size_t>(n * t), 0);
}

}  // namespace moerun
