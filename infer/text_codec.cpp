#include "infer/text_codec.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>

#include <filesystem>

#include "data/token_sidecar.h"
#include "runtime/error.h"
#include "runtime/vocab.h"
#include "train/config.h"

namespace moerun {

namespace {

class ByteCodec final : public TextCodec {
 public:
  std::vector<std::int32_t> encode(const std::string& text) const override {
    std::vector<std::int32_t> ids;
    for (const char c : text) ids.push_back(static_cast<std::int32_t>(static_cast<unsigned char>(c)));
    return ids;
  }
  std::string decode(const std::vector<std::int32_t>& ids) const override {
    std::string text;
    for (const std::int32_t id : ids)
      if (id >= 0 && id < 256) text.push_back(static_cast<char>(id));
    return text;
  }
  std::optional<std::int32_t> end_of_text() const override { return vocab::kEos; }
  std::string describe() const override { return "bytes"; }
};

class SentencePieceCodec final : public TextCodec {
 public:
  SentencePieceCodec(const std::string& path, std::int64_t vocab_size) : path_(path) {
    const auto status = processor_.Load(path);
    MOERUN_CHECK(status.ok(), DataError, "[tokenizer] cannot load the SentencePiece model '{}': {}; pass the model that "
                 "encoded the training data with --tokenizer", path, status.ToString());
    MOERUN_CHECK(processor_.GetPieceSize() == vocab_size, DataError,
                 "[tokenizer] '{}' has {} pieces but the model's vocabulary is model.vocab_size = {}: it is not the "
                 "tokenizer this model was trained with; pass that one with --tokenizer",
                 path, processor_.GetPieceSize(), vocab_size);
  }
  std::vector<std::int32_t> encode(const std::string& text) const override {
    std::vector<int> ids;
    const auto status = processor_.Encode(text, &ids);
    MOERUN_CHECK(status.ok(), DataError, "[tokenizer] '{}' cannot encode the prompt: {}", path_, status.ToString());
    return {ids.begin(), ids.end()};
  }
  std::string decode(const std::vector<std::int32_t>& ids) const override {
    std::string text;
    const auto status = processor_.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
    MOERUN_CHECK(status.ok(), DataError, "[tokenizer] '{}' cannot decode: {}", path_, status.ToString());
    return text;
  }
  std::optional<std::int32_t> end_of_text() const override {
    const int eos = processor_.eos_id();
    return eos >= 0 ? std::optional<std::int32_t>(eos) : std::nullopt;
  }
  std::string describe() const override { return fmt::format("SentencePiece {}", path_); }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace

std::unique_ptr<TextCodec> make_byte_codec() { return std::make_unique<ByteCodec>(); }

std::unique_ptr<TextCodec> load_sentencepiece_codec(const std::string& model_path, std::int64_t vocab_size) {
  MOERUN_CHECK(std::filesystem::is_regular_file(model_path), DataError,
               "[tokenizer] '{}' does not exist; pass the SentencePiece model that encoded the training data with "
               "--tokenizer", model_path);
  return std::make_unique<SentencePieceCodec>(model_path, vocab_size);
}

std::unique_ptr<TextCodec> codec_for(const Config& config, const std::optional<std::string>& tokenizer) {
  const std::int64_t vocab = config.model.vocab_size;
  if (tokenizer) return load_sentencepiece_codec(*tokenizer, vocab);
  if (const auto sidecar = config.data.source != "synthetic" && std::filesystem::exists(config.data.source)
                               ? read_sidecar(config.data.source)
                               : std::nullopt) {
    MOERUN_CHECK(std::filesystem::is_regular_file(sidecar->tokenizer) &&
                     file_checksum(sidecar->tokenizer) == sidecar->tokenizer_checksum,
                 DataError, "[tokenizer] the training data '{}' was encoded with '{}', which is {}; pass that tokenizer "
                 "with --tokenizer", config.data.source, sidecar->tokenizer,
                 std::filesystem::exists(sidecar->tokenizer) ? "a different file now (its checksum changed)" : "gone");
    return load_sentencepiece_codec(sidecar->tokenizer, vocab);
  }
  MOERUN_CHECK(vocab == vocab::kSize, DataError,
               "[tokenizer] the model's vocabulary is {} ids and its training data ('{}') names no tokenizer; pass the "
               "SentencePiece model it was trained with: --tokenizer FILE.model", vocab, config.data.source);
  return make_byte_codec();
}

}  // namespace moerun
