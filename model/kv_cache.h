// The keys and values of every attention layer for the positions decoded so far: what lets a
// generator feed one new token at a time instead of the whole prefix (Transformer::decode).
// fp32 whatever the compute dtype (bf16 keys and values are stored exactly).
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"
#include "runtime/tensor.h"

namespace moerun {

struct KvCache {
  // Room for `capacity` positions (at most model.seq_len with learned positions).
  KvCache(Device& device, const ModelConfig& config, std::int64_t capacity) {
    for (std::int64_t l = 0; l < config.n_layers; ++l) {
      keys.push_back(Tensor::zeros(device, {capacity, config.d_model}));
      values.push_back(Tensor::zeros(device, {capacity, config.d_model}));
    }
  }
  std::int64_t capacity() const { return keys.empty() ? 0 : keys.front().dim(0); }

  std::vector<Tensor> keys, values;  // per layer [capacity, d]; rows [0, length) are filled
  std::int64_t length = 0;            // positions held
};

}  // namespace moerun
