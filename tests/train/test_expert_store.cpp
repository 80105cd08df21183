// ExpertStore::reserve_arrivals: the spare expert slots' state is created and freed once at
// start-up, so that the device holds that memory for experts arriving later. It must leave
// the store as it was (no parameter, moment or byte left behind) and must really allocate.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/feed_forward.h"
#include "model/moe_layer.h"
#include "parallel/placement.h"
#include "parallel/process_group.h"
#include "test_device.h"
#include "train/config.h"
#include "train/expert_store.h"

namespace moerun::test {
namespace {

std::vector<std::string> names_of(const ParameterStore& params) {
  std::vector<std::string> names;
  for (const Parameter* p : params.all()) names.push_back(p->name);
  return names;
}

TEST(ExpertStore, ReservingArrivalsAllocatesTheSpareSlotsAndLeavesTheStoreAsItWas) {
  TestDevice dev;  // its own: the test reads its memory counters
  ModelConfig model;
  model.d_model = 32;
  model.d_ff = 64;
  model.experts = 4;
  ParameterStore params(dev, 1, 0.02, DType::F32);
  AdamW adam(TrainConfig{}, params);
  LocalGroup edp;
  ExpertStore store(model, false, params, adam, edp);
  const int block = 1;
  store.create_expert(block, 0);  // ep 2, rank 0 holds experts 0 and 1 of the block
  store.create_expert(block, 1);
  const std::vector<std::string> before = names_of(params);
  const MemoryStats held = dev->memory_stats();

  std::size_t state_bytes = 0;  // one expert: weights, gradients, both moments
  for (const std::string& name : FeedForwardSet::weight_names(model, MoeLayer::expert_prefix(block), 0))
    state_bytes += 4 * params.get(name).value.bytes();

  store.reserve_arrivals({block}, {Placement::contiguous(4, 2)}, /*ep_rank=*/0, /*per_layer=*/2);

  EXPECT_EQ(names_of(params), before);
  const MemoryStats after = dev->memory_stats();
  EXPECT_EQ(after.current_bytes, held.current_bytes);
  EXPECT_EQ(after.allocations, held.allocations);
  EXPECT_GE(after.peak_bytes, held.current_bytes + 2 * state_bytes);  // two experts' state existed at once
  // The experts it reserved for can still arrive.
  EXPECT_NO_THROW(store.create_expert(block, 2));
  EXPECT_NO_THROW(store.create_expert(block, 3));
}

}  // namespace
}  // namespace moerun::test
