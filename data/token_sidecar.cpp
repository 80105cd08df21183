#include "data/token_sidecar.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "runtime/error.h"

namespace moerun {

std::string sidecar_path(const std::string& token_file) { return token_file + ".json"; }

std::optional<TokenSidecar> read_sidecar(const std::string& token_file) {
  const std::string path = sidecar_path(token_file);
  if (!std::filesystem::exists(path)) return std::nullopt;
  std::ifstream in(path);
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    // Stored relative to the sidecar's folder, so that a corpus folder can move or be copied to
    // another machine; absolute paths (sidecars written before) are kept as they are.
    const std::filesystem::path stored = j.at("tokenizer").get<std::string>();
    const std::filesystem::path tokenizer =
        stored.is_absolute() ? stored : (std::filesystem::path(path).parent_path() / stored).lexically_normal();
    return TokenSidecar{tokenizer.string(), j.at("tokenizer_checksum").get<std::string>(),
                        j.at("vocab_size").get<std::int64_t>(), j.at("tokens").get<std::int64_t>(),
                        j.at("text_bytes").get<std::int64_t>()};
  } catch (const nlohmann::json::exception& e) {
    MOERUN_THROW(DataError, "[data] the sidecar '{}' is malformed ({}); write it again with moerun-data encode", path,
                 e.what());
  }
}

void write_sidecar(const std::string& token_file, const TokenSidecar& s) {
  namespace fs = std::filesystem;
  const fs::path folder = fs::absolute(sidecar_path(token_file)).parent_path();
  const std::string tokenizer = fs::absolute(s.tokenizer).lexically_relative(folder).string();
  const nlohmann::json j{{"tokenizer", tokenizer},   {"tokenizer_checksum", s.tokenizer_checksum},
                         {"vocab_size", s.vocab_size}, {"tokens", s.tokens},
                         {"text_bytes", s.text_bytes}};
  std::ofstream out(sidecar_path(token_file));
  out << j.dump(2) << "\n";
  MOERUN_CHECK(out.good(), DataError, "[data] cannot write '{}'", sidecar_path(token_file));
}

std::string file_checksum(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOERUN_CHECK(in.good(), DataError, "[data] cannot read '{}' for its checksum", path);
  std::uint64_t h = 0xcbf29ce484222325ull;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof(buffer)) || in.gcount() > 0) {
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      h ^= static_cast<unsigned char>(buffer[i]);
      h *= 0x100000001b3ull;
    }
  }
  return fmt::format("{:016x}", h);
}

}  // namespace moerun
