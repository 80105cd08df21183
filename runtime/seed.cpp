#include "runtime/seed.h"

namespace moerun {

namespace {
// SplitMix64's finalizer: a bijective mix with good avalanche.
std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace

std::uint64_t mix_seed(std::uint64_t seed, std::string_view text) {
  std::uint64_t h = splitmix(seed);
  for (unsigned char c : text) h = splitmix(h ^ c);
  return h;
}

std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t a, std::uint64_t b) {
  return splitmix(splitmix(splitmix(seed) ^ a) ^ b);
}

}  // namespace moerun
