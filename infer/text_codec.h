// Text to token ids and back, for generation: the byte vocabulary (ids 0-255 are bytes; pad,
// bos and eos are not text) or a SentencePiece model (the tokenizer a token file was encoded
// with, found through its sidecar, data/token_sidecar.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moerun {

struct Config;

class TextCodec {
 public:
  virtual ~TextCodec() = default;
  virtual std::vector<std::int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<std::int32_t>& ids) const = 0;
  // The id that ends a text (generation stops there), if the vocabulary has one.
  virtual std::optional<std::int32_t> end_of_text() const = 0;
  virtual std::string describe() const = 0;
};

std::unique_ptr<TextCodec> make_byte_codec();
// A SentencePiece model whose vocabulary must be `vocab_size` (DataError otherwise, or when the
// file is missing or not a SentencePiece model).
std::unique_ptr<TextCodec> load_sentencepiece_codec(const std::string& model_path, std::int64_t vocab_size);

// The codec of the model a config trained: `tokenizer` when given; else the tokenizer recorded
// in the sidecar of data.source (checked against the checksum recorded there); else bytes when
// model.vocab_size is the byte vocabulary's. Anything else is a DataError that says to pass
// --tokenizer.
std::unique_ptr<TextCodec> codec_for(const Config& config, const std::optional<std::string>& tokenizer);

}  // namespace moerun
