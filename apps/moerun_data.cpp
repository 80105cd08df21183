// moerun-data: a real tokenizer for moerun's token files, on SentencePiece.
//
//   moerun-data train  --input corpus.txt --model-prefix tok/corpus --vocab-size 8000 [--type bpe|unigram]
//   moerun-data encode --model tok/corpus.model --input corpus.txt --output corpus.u16
//
// train writes <prefix>.model and <prefix>.vocab. encode writes the token ids (u16 when the
// vocabulary fits in 16 bits, else u32: the extension must say which) and the sidecar
// <output>.json (data/token_sidecar.h) that moerun reads to check the vocabulary and tokenizer
// and to report bits per byte. Train with --set data.source=corpus.u16 --set model.vocab_size=8000.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "data/token_sidecar.h"
#include "runtime/error.h"

namespace {

using namespace moerun;

int train(const std::string& input, const std::string& prefix, int vocab_size, const std::string& type) {
  const std::string args = fmt::format(
      "--input={} --model_prefix={} --vocab_size={} --model_type={} --character_coverage=1.0 --byte_fallback=true "
      "--minloglevel=1",
      input, prefix, vocab_size, type);
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  MOERUN_CHECK(status.ok(), DataError, "[moerun-data train] SentencePiece could not train on '{}': {}", input,
               status.ToString());
  fmt::print("moerun-data: wrote {0}.model and {0}.vocab ({1} {2} pieces)\n", prefix, vocab_size, type);
  return 0;
}

// One token id, little-endian, in the file's width.
void write_id(std::ofstream& out, int id, bool wide) {
  const auto narrow = static_cast<std::uint16_t>(id);
  const auto full = static_cast<std::uint32_t>(id);
  out.write(wide ? reinterpret_cast<const char*>(&full) : reinterpret_cast<const char*>(&narrow), wide ? 4 : 2);
}

int encode(const std::string& model, const std::string& input, const std::string& output) {
  sentencepiece::SentencePieceProcessor processor;
  const auto status = processor.Load(model);
  MOERUN_CHECK(status.ok(), DataError, "[moerun-data encode] cannot load the tokenizer '{}': {}; train one with "
               "moerun-data train", model, status.ToString());
  std::ifstream in(input, std::ios::binary);
  MOERUN_CHECK(in.good(), DataError, "[moerun-data encode] cannot read '{}'", input);
  const bool wide = output.ends_with(".u32");
  MOERUN_CHECK(wide || output.ends_with(".u16"), DataError,
               "[moerun-data encode] the output '{}' must end in .u16 or .u32 (the token width moerun reads)", output);
  const int vocab = processor.GetPieceSize();
  MOERUN_CHECK(wide || vocab <= 65536, DataError,
               "[moerun-data encode] a vocabulary of {} ids does not fit in 16 bits; write a .u32 file", vocab);
  std::ofstream out(output, std::ios::binary);
  MOERUN_CHECK(out.good(), DataError, "[moerun-data encode] cannot write '{}'", output);
  TokenSidecar sidecar{std::filesystem::absolute(model).string(), file_checksum(model), vocab, 0, 0};
  std::string line;
  std::vector<int> ids;
  while (std::getline(in, line)) {  // line by line: a corpus need not fit in memory
    sidecar.text_bytes += static_cast<std::int64_t>(line.size()) + 1;
    line += '\n';
    const auto encoded = processor.Encode(line, &ids);
    MOERUN_CHECK(encoded.ok(), DataError, "[moerun-data encode] '{}': {}", input, encoded.ToString());
    for (int id : ids) write_id(out, id, wide);
    sidecar.tokens += static_cast<std::int64_t>(ids.size());
  }
  out.close();
  MOERUN_CHECK(out.good(), DataError, "[moerun-data encode] writing '{}' failed (disk full?)", output);
  write_sidecar(output, sidecar);
  fmt::print("moerun-data: {} -> {} ({} tokens, {:.2f} bytes per token, vocabulary {}) and {}\n", input, output,
             sidecar.tokens, sidecar.bytes_per_token(), vocab, sidecar_path(output));
  fmt::print("train with: --set data.source={} --set model.vocab_size={}\n", output, vocab);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moerun-data: SentencePiece tokenizers and token files for moerun"};
  app.require_subcommand(1);
  std::string input, prefix, model, output, type = "bpe";
  int vocab_size = 8000;
  auto* tr = app.add_subcommand("train", "train a BPE or unigram tokenizer on a text corpus");
  tr->add_option("--input", input, "the text corpus")->required();
  tr->add_option("--model-prefix", prefix, "writes <prefix>.model and <prefix>.vocab")->required();
  tr->add_option("--vocab-size", vocab_size, "pieces in the vocabulary");
  tr->add_option("--type", type, "bpe or unigram")->check(CLI::IsMember({"bpe", "unigram"}));
  auto* en = app.add_subcommand("encode", "encode a text into a token file and its sidecar");
  en->add_option("--model", model, "the tokenizer (<prefix>.model)")->required();
  en->add_option("--input", input, "the text")->required();
  en->add_option("--output", output, "the token file: .u16 or .u32")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    if (tr->parsed()) return train(input, prefix, vocab_size, type);
    return encode(model, input, output);
  } catch (const moerun::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
