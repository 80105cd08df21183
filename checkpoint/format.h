// The moerun checkpoint format (spec: docs/checkpoint-format.md): names, version, and the
// mapping from parameter names to datasets. Layout-independent: dense tensors by name, expert
// tensors stacked by expert id, so any world size and dp x ep can read any checkpoint.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace moerun::ckpt {

inline constexpr const char* kFormatName = "moerun-checkpoint";
inline constexpr std::int64_t kFormatVersion = 1;

// The three trees of a checkpoint: parameter values and the two AdamW moments, which mirror
// the model tree. Their paths are written here and nowhere else.
enum class Root { Model, MomentM, MomentV };
inline constexpr Root kRoots[] = {Root::Model, Root::MomentM, Root::MomentV};
const char* root_path(Root root);  // "/model", "/optimizer/m", "/optimizer/v"

// "layers.1.attention.w_qkv" -> "/model/layers/1/attention/w_qkv";
// "layers.1.moe.experts.3.w1" -> "/model/layers/1/moe/experts/w1", row 3 of the stacked dataset.
struct DatasetRef {
  std::string path;
  std::optional<std::int64_t> expert_row;  // set for expert tensors
};
DatasetRef dataset_for(Root root, const std::string& param_name);

// "<dir>/step_00000020.h5"
std::string file_name(std::int64_t step);
std::optional<std::int64_t> step_of_file(const std::string& file_name);

// 32-bit CRC (zlib's) of bytes, and the CRC of a concatenation from its parts.
std::uint32_t crc32_of(const void* data, std::size_t bytes);
std::uint32_t crc32_combine_parts(std::uint32_t first, std::uint32_t second, std::size_t second_bytes);

}  // namespace moerun::ckpt
