// Picks the next token from a row of logits: greedy at temperature 0, else softmax(logits / T)
// cut to the top_k most likely tokens and to the smallest set whose probability reaches top_p
// (nucleus sampling), drawn with a seeded generator so that a seed gives the same text twice.
#pragma once

#include <cstdint>
#include <random>
#include <span>

namespace moerun {

struct SamplingOptions {
  double temperature = 0.8;  // 0: greedy (the most likely token)
  std::int64_t top_k = 0;    // 0: no cut
  double top_p = 1.0;        // 1: no cut
  std::uint64_t seed = 1234;
};

class Sampler {
 public:
  // Bad values (a negative temperature or top_k, top_p outside (0, 1]) are a ConfigError
  // naming the option.
  explicit Sampler(const SamplingOptions& options);
  std::int32_t next(std::span<const float> logits);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace moerun
