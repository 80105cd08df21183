// Deterministic seeding: 64-bit hashes of (seed, name) and (seed, a, b) for independent random
// streams per parameter, per sequence and per purpose, identical on every rank and layout.
#pragma once

#include <cstdint>
#include <string_view>

namespace moerun {

std::uint64_t mix_seed(std::uint64_t seed, std::string_view text);
std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t a, std::uint64_t b = 0);

}  // namespace moerun
