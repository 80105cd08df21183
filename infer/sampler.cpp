#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "runtime/error.h"

namespace moerun {

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {
  MOERUN_CHECK(options.temperature >= 0.0 && std::isfinite(options.temperature), ConfigError,
               "--temperature {} must be >= 0 (0 = greedy; 0.7-1.0 is usual)", options.temperature);
  MOERUN_CHECK(options.top_k >= 0, ConfigError, "--top-k {} must be >= 0 (0 = no cut)", options.top_k);
  MOERUN_CHECK(options.top_p > 0.0 && options.top_p <= 1.0, ConfigError, "--top-p {} must be in (0, 1] (1 = no cut)",
               options.top_p);
}

std::int32_t Sampler::next(std::span<const float> logits) {
  const auto n = static_cast<std::int64_t>(logits.size());
  MOERUN_CHECK(n > 0, RuntimeError, "[sampler] empty logits");
  if (options_.temperature == 0.0)
    return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  // Tokens by falling logit (ties to the lower id), cut to top_k.
  std::vector<std::int32_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  const std::int64_t keep = options_.top_k > 0 ? std::min(options_.top_k, n) : n;
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), [&](std::int32_t a, std::int32_t b) {
    return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)] ||
           (logits[static_cast<std::size_t>(a)] == logits[static_cast<std::size_t>(b)] && a < b);
  });
  order.resize(static_cast<std::size_t>(keep));
  // Softmax at the temperature over the kept tokens, in double.
  const double top = logits[static_cast<std::size_t>(order.front())];
  std::vector<double> p(order.size());
  double sum = 0.0;
  for (std::size_t i = 0; i < order.size(); ++i)
    sum += p[i] = std::exp((double(logits[static_cast<std::size_t>(order[i])]) - top) / options_.temperature);
  // Nucleus: the most likely tokens until their probability reaches top_p.
  std::size_t nucleus = 0;
  double mass = 0.0;
  while (nucleus < p.size() && (nucleus == 0 || mass < options_.top_p * sum)) mass += p[nucleus++];
  // One uniform draw in [0, mass) from 53 random bits (the same on every platform).
  const double u = double(rng_() >> 11) * 0x1.0p-53 * mass;
  double acc = 0.0;
  for (std::size_t i = 0; i < nucleus; ++i) {
    acc += p[i];
    if (u < acc) return order[i];
  }
  return order[nucleus - 1];
}

}  // namespace moerun
