#include "infer/generator.h"

#include <chrono>

#include "runtime/error.h"

namespace moerun {

namespace {
double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
// The last row of logits [n, vocab].
std::vector<float> last_row(const Tensor& logits) {
  const Tensor row = logits.rows(logits.dim(0) - 1, logits.dim(0));
  return row.to_host();
}
}  // namespace

Generator::Generator(Transformer& model, Device& device)
    : model_(model), device_(device), cache_(device, model.config(), model.config().seq_len) {}

std::vector<float> Generator::prefill(const std::vector<std::int32_t>& tokens) {
  const auto start = std::chrono::steady_clock::now();
  cache_.length = 0;
  const Tensor input = Tensor::from_host(device_, {static_cast<std::int64_t>(tokens.size())}, tokens);
  std::vector<float> logits = last_row(model_.decode(input, cache_));
  stats_.prefill_seconds += seconds_since(start);
  ++stats_.prefills;
  return logits;
}

std::vector<std::int32_t> Generator::generate(const std::vector<std::int32_t>& prompt, std::int64_t max_new,
                                              Sampler& sampler, std::optional<std::int32_t> stop,
                                              const std::function<void(std::int32_t)>& on_token) {
  const std::int64_t context = model_.config().seq_len;
  MOERUN_CHECK(!prompt.empty(), ConfigError, "the prompt is empty: give at least one token of text with --prompt");
  MOERUN_CHECK(static_cast<std::int64_t>(prompt.size()) <= context, ConfigError,
               "the prompt is {} tokens, longer than the model's context model.seq_len = {}: shorten it",
               prompt.size(), context);
  MOERUN_CHECK(max_new >= 0, ConfigError, "--max-new-tokens {} must be >= 0", max_new);
  stats_ = GenerationStats{.prompt_tokens = static_cast<std::int64_t>(prompt.size())};
  std::vector<std::int32_t> tokens = prompt;
  std::vector<float> logits = prefill(tokens);
  const double first_prefill = stats_.prefill_seconds;
  std::vector<std::int32_t> generated;
  const auto start = std::chrono::steady_clock::now();
  while (static_cast<std::int64_t>(generated.size()) < max_new) {
    const std::int32_t next = sampler.next(logits);
    generated.push_back(next);
    tokens.push_back(next);
    if (on_token) on_token(next);
    if (stop && next == *stop) break;
    if (static_cast<std::int64_t>(generated.size()) == max_new) break;
    if (cache_.length == context) {  // the window is full: keep its last half
      const std::vector<std::int32_t> window(tokens.end() - context / 2 - 1, tokens.end());
      logits = prefill(window);
      continue;
    }
    const Tensor one = Tensor::from_host(device_, {1}, std::vector<std::int32_t>{next});
    logits = last_row(model_.decode(one, cache_));
  }
  stats_.new_tokens = static_cast<std::int64_t>(generated.size());
  stats_.decode_seconds = seconds_since(start) - (stats_.prefill_seconds - first_prefill);  // window slides apart
  return generated;
}

}  // namespace moerun
