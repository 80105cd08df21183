// The sidecar of a tokenized corpus: `<token file>.json`, written by moerun-data encode. It
// records the tokenizer (its path and a checksum of its model file), the vocabulary size, the
// token count and the text's byte count, so that moerun can check the vocabulary, refuse a
// token file made by another tokenizer, and report bits per byte (runs with different
// tokenizers then compare).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace moerun {

struct TokenSidecar {
  std::string tokenizer;           // path of the SentencePiece model (the file stores it relative to itself)
  std::string tokenizer_checksum;  // FNV-1a 64 of the model file, hex
  std::int64_t vocab_size = 0;
  std::int64_t tokens = 0;
  std::int64_t text_bytes = 0;     // bytes of the text the tokens encode

  double bytes_per_token() const { return tokens > 0 ? double(text_bytes) / double(tokens) : 0.0; }
};

std::string sidecar_path(const std::string& token_file);
// The sidecar next to token_file, if there is one; a malformed sidecar is a DataError.
std::optional<TokenSidecar> read_sidecar(const std::string& token_file);
void write_sidecar(const std::string& token_file, const TokenSidecar& sidecar);
// FNV-1a 64 of a file's bytes, as 16 hex digits (DataError when it cannot be read).
std::string file_checksum(const std::string& path);

}  // namespace moerun
