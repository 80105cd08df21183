// The CPU backend's block cache (runtime/cpu/cpu_device.h): freed blocks are reused best-fit
// up to twice a request's size class, so buffers whose size changes every step (the experts'
// activations under a skewed router) stop taking fresh memory from the host; large blocks
// start on huge-page boundaries.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>

#include "runtime/cpu/cpu_device.h"
#include "runtime/cpu/host_memory.h"

namespace moerun::test {
namespace {

constexpr std::size_t kKiB = 1024, kMiB = 1024 * 1024;

TEST(BlockCache, ReusesTheSmallestCachedBlockUpToTwiceTheRequest) {
  CpuDevice dev;
  void* big = dev.allocate(1 * kMiB);
  void* small = dev.allocate(200 * kKiB);
  dev.deallocate(big, 1 * kMiB);
  dev.deallocate(small, 200 * kKiB);
  EXPECT_EQ(dev.blocks_created(), 2);
  EXPECT_EQ(dev.cached_bytes(), 1 * kMiB + 224 * kKiB);  // 200 KiB is in the 224 KiB class

  void* again = dev.allocate(700 * kKiB);  // the 1 MiB block fits and is within 2x of 768 KiB
  EXPECT_EQ(again, big);
  EXPECT_EQ(dev.cached_bytes(), 224 * kKiB);
  dev.deallocate(again, 700 * kKiB);  // back as the 1 MiB block it is
  EXPECT_EQ(dev.cached_bytes(), 1 * kMiB + 224 * kKiB);

  void* tiny = dev.allocate(100 * kKiB);  // the 224 KiB block: the smallest that fits
  EXPECT_EQ(tiny, small);
  void* fresh = dev.allocate(300 * kKiB);  // 1 MiB is more than twice 320 KiB: a new block
  EXPECT_NE(fresh, big);
  EXPECT_EQ(dev.blocks_created(), 3);
  dev.deallocate(tiny, 100 * kKiB);
  dev.deallocate(fresh, 300 * kKiB);
  dev.release_cached();
  EXPECT_EQ(dev.cached_bytes(), 0u);
  EXPECT_EQ(dev.memory_stats().current_bytes, 0u);
}

// Expert activations: a few buffers a step whose sizes follow the routing. Once the cache
// holds blocks for the largest step, steps with other sizes (down to half) create none; with
// exact size classes alone most of them took fresh blocks.
TEST(BlockCache, BuffersThatChangeSizeEveryStepStopTakingFreshMemory) {
  CpuDevice dev;
  const std::size_t largest = 6 * kMiB;
  auto step = [&](const std::vector<std::size_t>& sizes) {
    std::vector<void*> blocks;
    for (std::size_t s : sizes) blocks.push_back(dev.allocate(s));
    for (std::size_t i = 0; i < sizes.size(); ++i) dev.deallocate(blocks[i], sizes[i]);
  };
  step({largest, largest, largest, largest});
  const auto warmed = dev.blocks_created();
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<std::size_t> size(largest / 2, largest);
  for (int i = 0; i < 50; ++i) step({size(rng), size(rng), size(rng), size(rng)});
  EXPECT_EQ(dev.blocks_created(), warmed);
}

TEST(BlockCache, LargeBlocksStartOnHugePageBoundariesAndAreWholeMemory) {
  CpuDevice dev;
  const std::size_t bytes = 5 * kMiB + 4 * kKiB;
  auto* p = static_cast<unsigned char*>(dev.allocate(bytes));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % cpu::kHugePageBytes, 0u);
  std::memset(p, 0xab, bytes);
  EXPECT_EQ(p[0], 0xab);
  EXPECT_EQ(p[bytes - 1], 0xab);
  auto* small = static_cast<unsigned char*>(dev.allocate(1000));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(small) % Device::kAlignment, 0u);
  dev.deallocate(small, 1000);
  dev.deallocate(p, bytes);
  dev.release_cached();  // unmaps the large block, frees the small one
  EXPECT_EQ(dev.cached_bytes(), 0u);
}

}  // namespace
}  // namespace moerun::test
