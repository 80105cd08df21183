// moerun-generate: text from a trained checkpoint, on one process with a KV cache.
//
//   moerun-generate --checkpoint RUN_DIR_OR_FILE [--prompt TEXT] [--max-new-tokens N]
//                   [--temperature T] [--top-k K] [--top-p P] [--seed S] [--tokenizer FILE.model]
//                   [--set section.key=value ...]
//
// The model is the checkpoint's, written on any layout (its stored config; --set may change
// only what does not define the tensors). Routing is dropless (model.capacity_factor = 0): a
// token's experts do not depend on the other tokens. The text goes to stdout, the figures to
// stderr. The tokenizer is the one recorded in the training data's sidecar, or bytes.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <iostream>

#include "checkpoint/checkpoint_reader.h"
#include "infer/generator.h"
#include "infer/text_codec.h"
#include "parallel/token_dispatcher.h"
#include "runtime/device_registry.h"
#include "runtime/error.h"
#include "train/checkpoint_state.h"
#include "train/config.h"

namespace {

using namespace moerun;

int generate(const std::string& checkpoint, const std::string& prompt_text, std::int64_t max_new,
             const SamplingOptions& sampling, const std::optional<std::string>& tokenizer,
             const std::vector<std::string>& overrides) {
  const ckpt::CheckpointReader file(ckpt::resolve_checkpoint(checkpoint));
  std::vector<std::string> changes;
  Config config = Config::resume(nlohmann::json::parse(file.string_attribute("config")), std::nullopt, overrides, changes);
  config.model.capacity_factor = 0.0;  // inference routes every token to its k experts
  const auto codec = codec_for(config, tokenizer);
  Sampler sampler(sampling);
  const auto device = make_device(config.runtime.device);
  ParameterStore params(*device, static_cast<std::uint64_t>(config.train.seed), config.model.init_std,
                        config.model.compute_dtype);
  LocalTokenDispatcher dispatcher(static_cast<int>(config.model.experts));
  Transformer model(config.model, params, dispatcher);
  load_model_values(file, params, config.model.experts);
  params.refresh_compute_copies();
  fmt::print(stderr, "moerun-generate: {} (step {}, {} parameters, {}), tokenizer {}, temperature {}, top-k {}, top-p {}, "
             "seed {}\n", file.path(), file.int_attribute("step"), params.count_elements(),
             dtype_name(config.model.compute_dtype), codec->describe(), sampling.temperature, sampling.top_k, sampling.top_p,
             sampling.seed);
  for (const std::string& c : changes) fmt::print(stderr, "moerun-generate: changed {}\n", c);
  std::vector<std::int32_t> prompt = codec->encode(prompt_text);
  Generator generator(model, *device);
  std::cout << prompt_text << std::flush;
  std::vector<std::int32_t> so_far;
  std::string printed;
  generator.generate(prompt, max_new, sampler, codec->end_of_text(), [&](std::int32_t id) {
    // Decode the whole continuation each time: a piece may only make sense with its neighbours.
    so_far.push_back(id);
    const std::string text = codec->decode(so_far);
    if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      std::cout << text.substr(printed.size()) << std::flush;
      printed = text;
    }
  });
  std::cout << "\n";
  const GenerationStats& s = generator.stats();
  fmt::print(stderr, "moerun-generate: {} prompt tokens in {:.1f} ms, {} new tokens at {:.1f} tokens/s{}\n", s.prompt_tokens,
             1000.0 * s.prefill_seconds, s.new_tokens, s.decode_seconds > 0 ? double(s.new_tokens) / s.decode_seconds : 0.0,
             s.prefills > 1 ? fmt::format(" (the context window slid {} time(s))", s.prefills - 1) : "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moerun-generate: text from a moerun checkpoint (one process, KV cache)"};
  std::string checkpoint, prompt = "\n";
  std::int64_t max_new = 200;
  SamplingOptions sampling;
  std::string tokenizer;
  std::vector<std::string> overrides;
  app.add_option("--checkpoint", checkpoint, "a checkpoint file, or a run directory (its latest checkpoint)")->required();
  app.add_option("--prompt", prompt, "the text to continue (default: a newline)");
  app.add_option("--max-new-tokens", max_new, "tokens to generate (default 200)");
  app.add_option("--temperature", sampling.temperature, "sampling temperature; 0 = greedy (default 0.8)");
  app.add_option("--top-k", sampling.top_k, "sample among the k most likely tokens; 0 = all (default)");
  app.add_option("--top-p", sampling.top_p, "nucleus: the most likely tokens up to this probability (default 1)");
  app.add_option("--seed", sampling.seed, "the sampler's seed: the same seed gives the same text (default 1234)");
  app.add_option("--tokenizer", tokenizer, "SentencePiece model (default: the one the training data's sidecar names)");
  app.add_option("--set", overrides, "section.key=value over the checkpoint's config (not the model's shape)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return generate(checkpoint, prompt, max_new, sampling, tokenizer.empty() ? std::nullopt : std::optional(tokenizer),
                    overrides);
  } catch (const std::exception& e) {
    fmt::print(stderr, "moerun-generate: error: {}\n", e.what());
    return 1;
  }
}
