// Text generation on one process: a prompt is fed through Transformer::decode in one prefill,
// then one sampled token at a time from the KV cache. When the context (model.seq_len) is full,
// the window slides: the cache restarts from the last half of the tokens (re-prefilled), as
// training saw windows of seq_len tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "infer/sampler.h"
#include "model/transformer.h"

namespace moerun {

struct GenerationStats {
  std::int64_t prompt_tokens = 0, new_tokens = 0, prefills = 0;
  double prefill_seconds = 0.0, decode_seconds = 0.0;
};

class Generator {
 public:
  Generator(Transformer& model, Device& device);
  // Feeds `prompt` (1 to model.seq_len tokens; else a ConfigError naming the limit) and samples
  // up to max_new tokens, stopping after `stop` when given. on_token sees each new token.
  std::vector<std::int32_t> generate(const std::vector<std::int32_t>& prompt, std::int64_t max_new, Sampler& sampler,
                                     std::optional<std::int32_t> stop,
                                     const std::function<void(std::int32_t)>& on_token = nullptr);
  const GenerationStats& stats() const { return stats_; }

 private:
  // Clears the cache and feeds `tokens`; returns the logits of the last one.
  std::vector<float> prefill(const std::vector<std::int32_t>& tokens);

  Transformer& model_;
  Device& device_;
  KvCache cache_;
  GenerationStats stats_;
};

}  // namespace moerun
