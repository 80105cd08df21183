// The byte-level vocabulary: the 256 byte values plus a few special tokens.
#pragma once

#include <cstdint>

namespace moerun::vocab {

inline constexpr std::int32_t kPad = 256;  // padding; its targets are ignored
inline constexpr std::int32_t kBos = 257;  // start of a sequence
inline constexpr std::int32_t kEos = 258;  // end of a document (token files)
inline constexpr std::int32_t kSize = 259;
inline constexpr std::int32_t kIgnore = -1;  // target label excluded from the loss

}  // namespace moerun::vocab
