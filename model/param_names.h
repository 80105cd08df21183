// Parameter names of the model, defined once: every tensor of block b is named
// "layers.<b>.<part>", an MoE layer's experts "layers.<b>.moe.experts.<e>.<weight>" (the
// checkpoint format stacks those by e). Code that needs a parameter's block asks block_of()
// instead of parsing the name itself.
#pragma once

#include <optional>
#include <string>

namespace moerun {

inline std::string block_prefix(int block) { return "layers." + std::to_string(block); }

// The block a parameter belongs to, or nothing for the embedding, final norm and LM head.
inline std::optional<int> block_of(const std::string& param_name) {
  static const std::string prefix = "layers.";
  if (param_name.rfind(prefix, 0) != 0) return std::nullopt;
  return std::stoi(param_name.substr(prefix.size()));
}

}  // namespace moerun
