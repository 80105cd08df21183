// measure_held_expert_seconds: what one more held expert costs a step, measured through the
// device on the real FFN and optimizer. Times are not checked (tests do not time); what is:
// a positive, finite figure; the probe really holds enough experts to leave the cache (64 MiB
// of state, or one expert when one is larger); and it leaves no memory behind.
#include <gtest/gtest.h>

#include <cmath>

#include "test_device.h"
#include "train/config.h"
#include "train/held_expert_cost.h"

namespace moerun::test {
namespace {

// Bytes the probe holds per expert: weights, gradients and two moments in fp32.
double expert_state_bytes(const ModelConfig& m) { return 2.0 * double(m.d_model * m.d_ff) * 16.0; }

TEST(HeldExpertCost, SmallExpertsAreProbedManyAtOnceAndLeaveNothingBehind) {
  TestDevice dev;
  Config config;
  config.model.d_model = 32;
  config.model.d_ff = 64;
  const MemoryStats before = dev->memory_stats();
  const double seconds = measure_held_expert_seconds(config, dev.get(), 2);
  EXPECT_GT(seconds, 0.0);
  EXPECT_TRUE(std::isfinite(seconds));
  const MemoryStats after = dev->memory_stats();
  EXPECT_EQ(after.current_bytes, before.current_bytes);
  EXPECT_GE(double(after.peak_bytes), double(before.current_bytes) + 16 * expert_state_bytes(config.model));  // the cap, 16
}

TEST(HeldExpertCost, AnExpertLargerThanTheCacheBoundIsProbedAlone) {
  TestDevice dev;
  Config config;
  config.model.d_model = 512;
  config.model.d_ff = 4096;  // 64 MiB of weights, gradients and moments per expert (80 with a compute copy, as the probe counts)
  const MemoryStats before = dev->memory_stats();
  EXPECT_GT(measure_held_expert_seconds(config, dev.get(), 1), 0.0);
  const MemoryStats after = dev->memory_stats();
  EXPECT_EQ(after.current_bytes, before.current_bytes);
  EXPECT_GE(double(after.peak_bytes), double(before.current_bytes) + expert_state_bytes(config.model));
  EXPECT_LT(double(after.peak_bytes), double(before.current_bytes) + 2 * expert_state_bytes(config.model));
}

}  // namespace
}  // namespace moerun::test
