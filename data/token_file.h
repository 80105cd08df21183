// A user's own data: a UTF-8 text file read as bytes, or a pre-tokenized binary file of
// little-endian uint16 or uint32 token ids, memory-mapped. Training sequences start at
// offsets drawn from (seed, step, index) in the first part of the file; held-out sequences
// come from the last `heldout_fraction` (data.valid_fraction, 5% by default; 1 = the whole
// file is held out, as a data.valid_source is). Errors (missing, empty, too short, ids out of
// the vocabulary) are raised before training starts.
#pragma once

#include <cstdint>
#include <string>

#include "data/data_source.h"

namespace moerun {

enum class TokenFileFormat { Text, U16, U32 };

// "auto" picks from the extension: .u16 / .bin16 -> U16, .u32 / .bin32 -> U32, else text.
TokenFileFormat parse_token_file_format(const std::string& format, const std::string& path);

class TokenFile final : public DataSource {
 public:
  TokenFile(const std::string& path, TokenFileFormat format, std::int64_t seq_len, std::uint64_t seed,
            std::int32_t vocab_size, double heldout_fraction = 0.05);
  ~TokenFile() override;
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  void training_batch(std::int64_t step, std::int64_t first, std::int64_t count, TokenBatch& out) const override;
  void heldout_batch(std::int64_t first, std::int64_t count, TokenBatch& out) const override;
  std::string describe() const override;
  double bytes_per_token() const override { return bytes_per_token_; }
  std::int64_t tokens() const { return tokens_; }

 private:
  std::int32_t token_at(std::int64_t i) const;
  void window(std::int64_t start, std::int32_t* inputs, std::int32_t* targets) const;

  std::string path_;
  TokenFileFormat format_;
  std::int64_t seq_len_;
  std::uint64_t seed_;
  const unsigned char* data_ = nullptr;
  std::size_t bytes_ = 0;
  std::int64_t tokens_ = 0;
  std::int64_t train_end_ = 0;  // windows [0, train_end_) train, the rest held out
  double bytes_per_token_ = 0.0;  // text: 1; a token file: from its sidecar, else unknown (0)
  std::string tokenizer_;         // from the sidecar, for describe()
};

}  // namespace moerun
