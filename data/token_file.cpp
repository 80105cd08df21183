#include "data/token_file.h"
#include "data/token_sidecar.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <cstring>
#include <random>

#include "runtime/error.h"
#include "runtime/seed.h"

namespace moerun {

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
std::size_t token_bytes(TokenFileFormat f) { return f == TokenFileFormat::Text ? 1 : f == TokenFileFormat::U16 ? 2 : 4; }
const char* format_name(TokenFileFormat f) { return f == TokenFileFormat::Text ? "text" : f == TokenFileFormat::U16 ? "u16" : "u32"; }
}  // namespace

TokenFileFormat parse_token_file_format(const std::string& format, const std::string& path) {
  if (format == "text") return TokenFileFormat::Text;
  if (format == "u16") return TokenFileFormat::U16;
  if (format == "u32") return TokenFileFormat::U32;
  MOERUN_CHECK(format == "auto", ConfigError, "data.format = '{}' is not one of: auto, text, u16, u32", format);
  if (ends_with(path, ".u16") || ends_with(path, ".bin16")) return TokenFileFormat::U16;
  if (ends_with(path, ".u32") || ends_with(path, ".bin32")) return TokenFileFormat::U32;
  return TokenFileFormat::Text;
}

TokenFile::TokenFile(const std::string& path, TokenFileFormat format, std::int64_t seq_len, std::uint64_t seed,
                     std::int32_t vocab_size, double heldout_fraction)
    : path_(path), format_(format), seq_len_(seq_len), seed_(seed) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  MOERUN_CHECK(fd >= 0, DataError, "[data] cannot open data.source '{}': {}; give an existing text or token file, or "
               "data.source = \"synthetic\"", path, std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  bytes_ = static_cast<std::size_t>(st.st_size);
  if (bytes_ == 0) {
    ::close(fd);
    MOERUN_THROW(DataError, "[data] data.source '{}' is empty", path);
  }
  void* map = ::mmap(nullptr, bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  MOERUN_CHECK(map != MAP_FAILED, DataError, "[data] cannot map '{}': {}", path, std::strerror(errno));
  data_ = static_cast<const unsigned char*>(map);
  const std::size_t tb = token_bytes(format_);
  MOERUN_CHECK(bytes_ % tb == 0, DataError,
               "[data] '{}' has {} bytes, not a multiple of {} as a {} token file needs; is data.format right?", path,
               bytes_, tb, format_name(format_));
  tokens_ = static_cast<std::int64_t>(bytes_ / tb);
  // Need a training window and a held-out window of seq_len + 1 tokens each (only the held-out
  // one when the whole file is held out).
  const bool all_heldout = heldout_fraction >= 1.0;
  const std::int64_t heldout =
      all_heldout ? tokens_ : std::max<std::int64_t>(seq_len + 1, static_cast<std::int64_t>(double(tokens_) * heldout_fraction));
  train_end_ = tokens_ - heldout;
  MOERUN_CHECK((all_heldout || train_end_ >= seq_len + 1) && heldout >= seq_len + 1, DataError,
               "[data] '{}' holds {} tokens, too few for model.seq_len = {} (need at least {}: {}); use a longer file "
               "or a smaller model.seq_len",
               path, tokens_, seq_len, (all_heldout ? 1 : 2) * (seq_len + 1),
               all_heldout ? "one held-out sequence" : "one training and one held-out sequence");
  if (format_ == TokenFileFormat::Text) bytes_per_token_ = 1.0;
  if (const auto sidecar = read_sidecar(path); sidecar && format_ != TokenFileFormat::Text) {
    MOERUN_CHECK(sidecar->vocab_size == vocab_size, DataError,
                 "[data] '{}' was encoded with a tokenizer of {} ids ({}), but model.vocab_size = {}; set "
                 "model.vocab_size = {}",
                 path, sidecar->vocab_size, sidecar_path(path), vocab_size, sidecar->vocab_size);
    MOERUN_CHECK(sidecar->tokens == tokens_, DataError,
                 "[data] '{}' holds {} tokens but its sidecar {} says {}: the file changed after moerun-data encode; "
                 "encode it again", path, tokens_, sidecar_path(path), sidecar->tokens);
    if (std::filesystem::exists(sidecar->tokenizer)) {
      MOERUN_CHECK(file_checksum(sidecar->tokenizer) == sidecar->tokenizer_checksum, DataError,
                   "[data] the tokenizer '{}' is not the one '{}' was encoded with (checksum {} expected); encode the "
                   "text again with this tokenizer, or point the sidecar at the right one", sidecar->tokenizer, path,
                   sidecar->tokenizer_checksum);
    }
    bytes_per_token_ = sidecar->bytes_per_token();
    tokenizer_ = sidecar->tokenizer;
  }
  if (format_ != TokenFileFormat::Text) {
    for (std::int64_t i = 0; i < tokens_; ++i) {
      const std::int32_t t = token_at(i);
      MOERUN_CHECK(t >= 0 && t < vocab_size, DataError,
                   "[data] '{}': token {} at position {} (byte offset {}) is outside the vocabulary [0, {}); set "
                   "model.vocab_size above {} if the file's tokenizer has that many ids, or check data.format",
                   path, t, i, i * static_cast<std::int64_t>(tb), vocab_size, t);
    }
  }
}

TokenFile::~TokenFile() {
  if (data_ != nullptr) ::munmap(const_cast<unsigned char*>(data_), bytes_);
}

std::string TokenFile::describe() const {
  if (!tokenizer_.empty())
    return fmt::format("{} ({} file, {} tokens, tokenizer {}, {:.2f} bytes per token)", path_, format_name(format_), tokens_,
                       tokenizer_, bytes_per_token_);
  return fmt::format("{} ({} file, {} tokens)", path_, format_name(format_), tokens_);
}

std::int32_t TokenFile::token_at(std::int64_t i) const {
  switch (format_) {
    case TokenFileFormat::Text: return data_[i];
    case TokenFileFormat::U16: {
      std::uint16_t v;
      std::memcpy(&v, data_ + 2 * i, 2);
      return v;
    }
    case TokenFileFormat::U32: {
      std::uint32_t v;
      std::memcpy(&v, data_ + 4 * i, 4);
      return static_cast<std::int32_t>(v);
    }
  }
  return 0;
}

void TokenFile::window(std::int64_t start, std::int32_t* inputs, std::int32_t* targets) const {
  for (std::int64_t i = 0; i < seq_len_; ++i) {
    inputs[i] = token_at(start + i);
    targets[i] = token_at(start + i + 1);
  }
}

void TokenFile::training_batch(std::int64_t step, std::int64_t first, std::int64_t count, TokenBatch& out) const {
  out.resize(count, seq_len_);
  const std::int64_t starts = train_end_ - seq_len_;  // windows must end inside the training part
  for (std::int64_t i = 0; i < count; ++i) {
    std::mt19937_64 rng(mix_seed(seed_, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(first + i)));
    const std::int64_t start = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(starts));
    window(start, out.inputs.data() + i * seq_len_, out.targets.data() + i * seq_len_);
  }
}

void TokenFile::heldout_batch(std::int64_t first, std::int64_t count, TokenBatch& out) const {
  out.resize(count, seq_len_);
  const std::int64_t span = tokens_ - train_end_ - seq_len_;  // >= 1 by construction
  for (std::int64_t i = 0; i < count; ++i) {
    const std::int64_t start = train_end_ + ((first + i) * 7919) % std::max<std::int64_t>(1, span);
    window(start, out.inputs.data() + i * seq_len_, out.targets.data() + i * seq_len_);
  }
}

}  // namespace moerun
