#include "checkpoint/format.h"

#include <fmt/format.h>
#include <zlib.h>

#include <regex>

namespace moerun::ckpt {

const char* root_path(Root root) {
  switch (root) {
    case Root::Model: return "/model";
    case Root::MomentM: return "/optimizer/m";
    case Root::MomentV: return "/optimizer/v";
  }
  return "?";
}

DatasetRef dataset_for(Root root, const std::string& param_name) {
  static const std::regex expert(R"(^(layers\.\d+\.moe\.experts)\.(\d+)\.(\w+)$)");
  std::smatch m;
  std::string name = param_name;
  DatasetRef ref;
  if (std::regex_match(param_name, m, expert)) {
    name = m[1].str() + "." + m[3].str();
    ref.expert_row = std::stoll(m[2].str());
  }
  for (char& c : name)
    if (c == '.') c = '/';
  ref.path = std::string(root_path(root)) + "/" + name;
  return ref;
}

std::string file_name(std::int64_t step) { return fmt::format("step_{:08d}.h5", step); }

std::optional<std::int64_t> step_of_file(const std::string& name) {
  static const std::regex pattern(R"(^step_(\d{8})\.h5$)");
  std::smatch m;
  if (!std::regex_match(name, m, pattern)) return std::nullopt;
  return std::stoll(m[1].str());
}

std::uint32_t crc32_of(const void* data, std::size_t bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = static_cast<const Bytef*>(data);
  while (bytes > 0) {  // zlib takes uInt lengths
    const auto chunk = static_cast<uInt>(std::min<std::size_t>(bytes, 1u << 30));
    crc = crc32(crc, p, chunk);
    p += chunk;
    bytes -= chunk;
  }
  return static_cast<std::uint32_t>(crc);
}

std::uint32_t crc32_combine_parts(std::uint32_t first, std::uint32_t second, std::size_t second_bytes) {
  return static_cast<std::uint32_t>(crc32_combine(first, second, static_cast<z_off_t>(second_bytes)));
}

}  // namespace moerun::ckpt
