// The device's dispatch layout (kernels/routing.h) in its three layouts against the reference,
// over replicated placements, capacities and block sizes; hand-computed cases; the balancing
// loss's expert counts; and the argument checks.
#include <random>

#include "kernels/routing.h"
#include "runtime/error.h"
#include "test_util.h"

namespace moerun::test {

namespace {

struct Layout {
  std::vector<std::int32_t> token, gate, labels;
  std::vector<float> counts;
};

Layout run(const std::vector<std::int32_t>& choices, std::int64_t k, std::int64_t experts, DispatchLayoutArgs args,
           const std::vector<std::int32_t>& split = {}, const std::vector<std::int32_t>& slot_of = {}, std::int64_t ep = 1) {
  const std::int64_t n = static_cast<std::int64_t>(choices.size()) / k;
  Tensor index = Tensor::from_host(device(), {n, k}, choices);
  Tensor split_t, slot_t, labels;
  std::int64_t rows = n * k;
  if (!split.empty()) {
    split_t = Tensor::from_host(device(), {experts, ep}, split);
    slot_t = Tensor::from_host(device(), {experts, ep}, slot_of);
    args.split = &split_t;
    args.slot_of = &slot_t;
    rows = args.slots > 0 ? ep * args.slots * args.capacity : ep * args.blocks * args.block;
  }
  if (args.block > 0) {
    labels = Tensor(device(), {ep * args.blocks, 1}, DType::I32);
    args.labels = &labels;
  }
  Tensor token(device(), {rows}, DType::I32), gate(device(), {rows}, DType::I32), counts(device(), {2, experts});
  args.index = &index;
  args.token_of_row = &token;
  args.gate_of_row = &gate;
  args.counts = &counts;
  kernels::dispatch_layout(args);
  Layout out{token.to_host_i32(), gate.to_host_i32(), {}, counts.to_host()};
  if (labels.defined()) out.labels = labels.to_host_i32();
  return out;
}

std::vector<float> as_floats(const std::vector<std::int64_t>& a, const std::vector<std::int64_t>& b) {
  std::vector<float> out;
  for (const auto* v : {&a, &b})
    for (const std::int64_t x : *v) out.push_back(static_cast<float>(x));
  return out;
}

}  // namespace

TEST(DispatchLayout, CapacityKeepsFirstChoicesFirstAndSortsByExpert) {
  // 4 tokens, top-2, 3 experts; expert 0 is everyone's first choice.
  const std::vector<std::int32_t> choices = {0, 1, 0, 2, 0, 1, 0, 2};
  const Layout l = run(choices, 2, 3, {.capacity = 3});
  EXPECT_EQ(l.counts, (std::vector<float>{4, 2, 2, 3, 2, 2}));  // routed, then kept
  // Token 3's first choice is the one dropped (tokens 0-2 came first); order is by expert.
  EXPECT_EQ(l.token, (std::vector<std::int32_t>{0, 1, 2, 0, 2, 1, 3, -1}));
  EXPECT_EQ(l.gate, (std::vector<std::int32_t>{0, 2, 4, 1, 5, 3, 7, -1}));
  const Layout dropless = run(choices, 2, 3, {});
  EXPECT_EQ(dropless.counts, (std::vector<float>{4, 2, 2, 4, 2, 2}));
  EXPECT_EQ(dropless.token, (std::vector<std::int32_t>{0, 1, 2, 3, 0, 2, 1, 3}));
}

// One rank, 8 experts, blocks of 16: 128 copies need the worst case ceil((128 - 7) / 16) + 7 =
// 15 block places; these counts fill 11, in expert order, the rest unused.
TEST(DispatchLayout, BlocksOfOneExpertInExpertOrder) {
  const std::vector<std::int64_t> kept = {40, 0, 17, 1, 0, 70, 0, 0};
  std::vector<std::int32_t> choices;
  for (std::int32_t e = 0; e < 8; ++e) choices.insert(choices.end(), static_cast<std::size_t>(kept[std::size_t(e)]), e);
  std::vector<std::int32_t> split(8, 1), slot_of(8);
  for (std::int32_t e = 0; e < 8; ++e) slot_of[std::size_t(e)] = e;
  const Layout l = run(choices, 1, 8, {.block = 16, .blocks = 15}, split, slot_of);
  EXPECT_EQ(l.labels, (std::vector<std::int32_t>{0, 0, 0, 2, 2, 3, 5, 5, 5, 5, 5, -1, -1, -1, -1}));
  EXPECT_EQ(l.token[48], 40);  // expert 2's first copy (token 40) opens block 3
  EXPECT_EQ(l.token[47], -1);  // the end of expert 0's last block is padding
  EXPECT_EQ(l.token[5 * 16], 57);  // expert 3's one copy
}

// Three ranks, six experts, some replicated with uneven shares; the source is rank 1.
TEST(DispatchLayout, AllLayoutsMatchTheReferenceOverReplicas) {
  const std::int64_t experts = 6, ep = 3, slots = 4;
  // Shares of the copies from rank 1, per expert and rank (1 holds e1, e3, e4, e5: all to itself).
  const std::vector<std::int32_t> split = {1, 0, 0, /**/ 0, 1, 0, /**/ 0, 0, 1, /**/ 0, 1, 0, /**/ 0, 1, 0, /**/ 0, 1, 0};
  // From rank 0, which does not hold e1, e2, e4: e4 is split 1:2 over ranks 1 and 2.
  const std::vector<std::int32_t> split0 = {1, 0, 0, /**/ 0, 1, 0, /**/ 0, 0, 1, /**/ 1, 0, 0, /**/ 0, 1, 2, /**/ 1, 0, 0};
  const std::vector<std::int32_t> slot_of = {0, -1, -1, /**/ -1, 0, -1, /**/ -1, -1, 0, /**/ 1, 1, -1,
                                             /**/ -1, 2, 1, /**/ 2, 3, 2};
  for (const std::int64_t k : {1, 2}) {
    for (const std::int64_t n : {0, 1, 37, 64}) {
      std::mt19937 rng(static_cast<std::uint32_t>(n * 10 + k));
      std::vector<std::int32_t> choices(static_cast<std::size_t>(n * k));
      for (std::int64_t t = 0; t < n; ++t) {  // distinct within a token, skewed towards e4
        std::vector<std::int32_t> all = {4, 4, 4, 0, 1, 2, 3, 5};
        std::shuffle(all.begin(), all.end(), rng);
        std::int64_t j = 0;
        for (const std::int32_t e : all) {
          if (j == k) break;
          bool seen = false;
          for (std::int64_t i = 0; i < j; ++i) seen = seen || choices[std::size_t(t * k + i)] == e;
          if (!seen) choices[std::size_t(t * k + j++)] = e;
        }
      }
      for (const auto* s : {&split, &split0}) {
        SCOPED_TRACE(testing::Message() << "k " << k << " n " << n << (s == &split ? " from rank 1" : " from rank 0"));
        const std::int64_t capacity = std::max<std::int64_t>(1, (n * k + experts - 1) / experts);
        const Layout sorted = run(choices, k, experts, {.capacity = capacity});
        const auto ref_sorted = reference::dispatch_layout(choices, int(k), int(experts), capacity, {}, {}, 1, 0, 0, 0);
        EXPECT_EQ(sorted.token, ref_sorted.token_of_row);
        EXPECT_EQ(sorted.gate, ref_sorted.gate_of_row);
        EXPECT_EQ(sorted.counts, as_floats(ref_sorted.assigned, ref_sorted.kept));
        const Layout slotted = run(choices, k, experts, {.capacity = capacity, .slots = slots}, *s, slot_of, ep);
        const auto ref_slots = reference::dispatch_layout(choices, int(k), int(experts), capacity, *s, slot_of, int(ep), slots, 0, 0);
        EXPECT_EQ(slotted.token, ref_slots.token_of_row);
        EXPECT_EQ(slotted.gate, ref_slots.gate_of_row);
        const std::int64_t block = 4, partial = ep * slots - 1;
        const std::int64_t blocks = n * k <= partial ? n * k : (n * k - partial + block - 1) / block + partial;
        const Layout blocked = run(choices, k, experts, {.block = block, .blocks = std::max<std::int64_t>(blocks, 1)}, *s,
                                   slot_of, ep);
        const auto ref_blocks = reference::dispatch_layout(choices, int(k), int(experts), 0, *s, slot_of, int(ep), 0, block,
                                                           std::max<std::int64_t>(blocks, 1));
        EXPECT_EQ(blocked.token, ref_blocks.token_of_row);
        EXPECT_EQ(blocked.gate, ref_blocks.gate_of_row);
        EXPECT_EQ(blocked.labels, ref_blocks.labels);
        EXPECT_EQ(blocked.counts, as_floats(ref_blocks.assigned, ref_blocks.kept));
      }
    }
  }
}

TEST(DispatchLayout, ExpertCountsPerGroupOfTokens) {
  const std::vector<std::int32_t> choices = {0, 1, 0, 2, /* group 2 */ 2, 1, 2, 0};
  Tensor index = Tensor::from_host(device(), {4, 2}, choices), out(device(), {2, 3});
  kernels::expert_counts({.index = &index, .groups = 2, .out = &out});
  EXPECT_EQ(out.to_host(), (std::vector<float>{2, 1, 1, 1, 1, 2}));
  Tensor three(device(), {3, 3});
  EXPECT_THROW(kernels::expert_counts({.index = &index, .groups = 3, .out = &three}), KernelError);
}

TEST(DispatchLayout, RejectsAShareForARankWithoutASlotAndBadArguments) {
  const std::vector<std::int32_t> choices = {0, 1, 1, 1};
  // Expert 1's copies go to rank 1, which has no slot for it.
  EXPECT_THROW(run(choices, 1, 2, {.capacity = 4, .slots = 1}, {1, 0, 0, 1}, {0, -1, -1, -1}, 2), KernelError);
  // Over capacity in a slot cannot happen after the cut; slots and blocks together can.
  Tensor index = Tensor::from_host(device(), {4, 1}, choices), rows(device(), {4}, DType::I32), counts(device(), {2, 2});
  EXPECT_THROW(kernels::dispatch_layout({.index = &index, .slots = 1, .block = 2, .token_of_row = &rows,
                                         .gate_of_row = &rows, .counts = &counts}),
               KernelError);
  Tensor wrong(device(), {3}, DType::I32);  // the sorted layout has n k rows
  EXPECT_THROW(kernels::dispatch_layout({.index = &index, .token_of_row = &wrong, .gate_of_row = &wrong, .counts = &counts}),
               KernelError);
}

}  // namespace moerun::test
