// moerun-data: a real tokenizer for moerun's token files, on SentencePiece.
//
//   moerun-data train  --input corpus.txt --model-prefix tok/corpus --vocab-size 8000 [--type bpe|unigram]
//   moerun-data encode --model tok/corpus.model --input corpus.txt --output corpus.u16
//   moerun-data decode --model tok/corpus.model --input corpus.u16 [--output corpus.txt]
//
// train writes <prefix>.model and <prefix>.vocab. encode writes the token ids (u16 when the
// vocabulary fits in 16 bits, else u32: the extension must say which) and the sidecar
// <output>.json (data/token_sidecar.h) that moerun reads to check the vocabulary and tokenizer
// and to report bits per byte. Train with --set data.source=corpus.u16 --set model.vocab_size=8000.
// decode writes the text back (stdout without --output).
//
// Tokenizers are trained lossless: no normalization (SentencePiece's default NFKC folds line
// breaks and runs of spaces), no dummy space before each line, and bytes for characters outside
// the pieces. decode(encode(text)) is the text byte for byte (tested), so generated text keeps
// its line breaks and bits per byte count the text as it is.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "data/token_sidecar.h"
#include "runtime/error.h"

namespace {

using namespace moerun;

int train(const std::string& input, const std::string& prefix, int vocab_size, const std::string& type) {
  const std::string args = fmt::format(
      "--input={} --model_prefix={} --vocab_size={} --model_type={} --character_coverage=1.0 --byte_fallback=true "
      "--normalization_rule_name=identity --remove_extra_whitespaces=false --add_dummy_prefix=false --minloglevel=1",
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
  TokenSidecar sidecar{model, file_checksum(model), vocab, 0, 0};
  std::string line;
  std::vector<int> ids;
  while (std::getline(in, line)) {  // line by line: a corpus need not fit in memory
    if (!in.eof()) line += '\n';  // the last line keeps its missing line break missing
    sidecar.text_bytes += static_cast<std::int64_t>(line.size());
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

// Reads a token file and writes its text, in pieces of about a million tokens cut before a
// token that is not a byte (a character made of byte tokens stays whole).
int decode(const std::string& model, const std::string& input, const std::string& output) {
  sentencepiece::SentencePieceProcessor processor;
  const auto status = processor.Load(model);
  MOERUN_CHECK(status.ok(), DataError, "[moerun-data decode] cannot load the tokenizer '{}': {}", model, status.ToString());
  const bool wide = input.ends_with(".u32");
  MOERUN_CHECK(wide || input.ends_with(".u16"), DataError, "[moerun-data decode] '{}' must end in .u16 or .u32", input);
  std::ifstream in(input, std::ios::binary);
  MOERUN_CHECK(in.good(), DataError, "[moerun-data decode] cannot read '{}'", input);
  std::ofstream file;
  if (!output.empty()) {
    file.open(output, std::ios::binary);
    MOERUN_CHECK(file.good(), DataError, "[moerun-data decode] cannot write '{}'", output);
  }
  std::ostream& out = output.empty() ? std::cout : file;
  std::vector<int> ids;
  std::string text;
  auto flush = [&] {
    const auto decoded = processor.Decode(ids, &text);
    MOERUN_CHECK(decoded.ok(), DataError, "[moerun-data decode] '{}': {}", input, decoded.ToString());
    out << text;
    ids.clear();
  };
  const int vocab = processor.GetPieceSize();
  std::uint32_t id = 0;
  for (std::int64_t position = 0; in.read(reinterpret_cast<char*>(&id), wide ? 4 : 2); ++position) {
    if (!wide) id &= 0xffffu;
    MOERUN_CHECK(static_cast<int>(id) < vocab, DataError, "[moerun-data decode] '{}' holds id {} at token {}, outside the "
                 "tokenizer's {} pieces: it was encoded with another tokenizer", input, id, position, vocab);
    if (ids.size() >= (1u << 20) && !processor.IsByte(static_cast<int>(id))) flush();
    ids.push_back(static_cast<int>(id));
  }
  flush();
  out.flush();
  MOERUN_CHECK(out.good(), DataError, "[moerun-data decode] writing the text failed (disk full?)");
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
  auto* de = app.add_subcommand("decode", "write the text of a token file");
  de->add_option("--model", model, "the tokenizer (<prefix>.model)")->required();
  de->add_option("--input", input, "the token file: .u16 or .u32")->required();
  de->add_option("--output", output, "the text file (default: stdout)");
  CLI11_PARSE(app, argc, argv);
  try {
    if (tr->parsed()) return train(input, prefix, vocab_size, type);
    if (de->parsed()) return decode(model, input, output);
    return encode(model, input, output);
  } catch (const moerun::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
