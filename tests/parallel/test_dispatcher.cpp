// AllToAllDispatcher under mpirun: every row reaches the rank holding its expert, grouped
// by local expert then source rank; combine is the exact inverse; only crossing rows are
// counted as sent, at the payload dtype's size (fp32 and bf16). Payloads are stamped with (source rank, expert, index). Contiguous and
// scrambled placements, including one rank holding every expert.
#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <random>

#include "kernels/quantize.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/topology.h"
#include "mpi_test_util.h"
#include "test_device.h"

namespace moerun::test {
namespace {

// Each rank sends `count(rank, e)` rows to expert e; row j of (rank, e) is [rank, e, j, 7].
std::int64_t count(int rank, int e) { return (rank * 3 + e * 5) % 7; }

// ranks_per_node > 0: the hierarchical exchange, with nodes of that many consecutive ranks.
// The payload's dtype travels as it is (small integers are exact in bf16): bf16 rows cost
// exactly half the bytes of fp32 rows on the same routes.
void check_one_round_trip(const Placement& placement, int ranks_per_node, DType dtype) {
  auto w = world();
  TestDevice dev;
  AllToAllDispatcher dispatcher(*w, placement);
  if (ranks_per_node > 0) {
    std::vector<int> node_of_rank;
    for (int r = 0; r < w->size(); ++r) node_of_rank.push_back(r / ranks_per_node);
    dispatcher.set_nodes(node_of_rank, /*hierarchical=*/true);
  }
  const int experts = placement.experts(), me = w->rank();
  std::vector<std::int64_t> per_expert;
  std::vector<float> rows;
  for (int e = 0; e < experts; ++e) {
    per_expert.push_back(count(me, e));
    for (std::int64_t j = 0; j < count(me, e); ++j) rows.insert(rows.end(), {float(me), float(e), float(j), 7.0f});
  }
  const auto n = static_cast<std::int64_t>(rows.size() / 4);
  const DispatchPlan plan = dispatcher.plan(per_expert);
  // The caller hands its rows over in the plan's send order: regrouped by destination rank
  // exactly when the placement is not rank-contiguous.
  EXPECT_EQ(plan.send_order.empty(), placement.rank_contiguous()) << placement.describe();
  if (!plan.send_order.empty()) {
    ASSERT_EQ(static_cast<std::int64_t>(plan.send_order.size()), n);
    std::vector<float> sent;
    for (std::int32_t i : plan.send_order) sent.insert(sent.end(), rows.begin() + 4 * i, rows.begin() + 4 * i + 4);
    rows = std::move(sent);
  }
  Tensor input = Tensor::from_host(dev, {n, 4}, rows, dtype);
  (void)dev->take_transfer_stats();
  Tensor received = dispatcher.dispatch(plan, input);
  const std::int64_t staged_out = dev->take_transfer_stats().device_to_host_bytes;
  // Expected: for each local expert (ascending), for each source rank, the chunk of its rows
  // that the placement sends here, in order.
  std::vector<float> expected;
  std::vector<std::int64_t> per_local;
  for (int e : dispatcher.local_experts()) {
    std::int64_t total = 0;
    for (int s = 0; s < w->size(); ++s) {
      const auto split = placement.split(e, s, count(s, e));
      std::int64_t start = 0;
      for (int r = 0; r < me; ++r) start += split[static_cast<std::size_t>(r)];
      for (std::int64_t j = start; j < start + split[static_cast<std::size_t>(me)]; ++j, ++total)
        expected.insert(expected.end(), {float(s), float(e), float(j), 7.0f});
    }
    per_local.push_back(total);
  }
  EXPECT_EQ(plan.recv_per_local_expert, per_local);
  EXPECT_EQ(received.to_host(), expected);
  // Combine returns every row to where it came from.
  (void)dev->take_transfer_stats();  // not the reads above
  Tensor back = dispatcher.combine(plan, received);
  const std::int64_t staged_back = dev->take_transfer_stats().device_to_host_bytes;
  EXPECT_EQ(back.to_host(), rows);
  // Sent bytes: rows for experts on other ranks, both ways.
  std::int64_t crossing = 0, returning = 0;
  for (int e = 0; e < experts; ++e) {
    const auto split = placement.split(e, me, count(me, e));
    for (int r = 0; r < w->size(); ++r)
      if (r != me) crossing += split[static_cast<std::size_t>(r)];
  }
  for (int e : dispatcher.local_experts())
    for (int s = 0; s < w->size(); ++s)
      if (s != me) returning += placement.split(e, s, count(s, e))[static_cast<std::size_t>(me)];
  const DispatchStats stats = dispatcher.take_stats();
  EXPECT_EQ(plan.rows_sent_remote, crossing);
  if (ranks_per_node > 0) return;  // relayed rows are sent more than once
  EXPECT_EQ(stats.rows_sent, crossing + returning);
  EXPECT_EQ(stats.bytes_sent, (crossing + returning) * 4 * static_cast<std::int64_t>(dtype_size(dtype)));
  // The staging path moves exactly the exchanged bytes (the own block stays on the device); a
  // host-accessible device hands MPI its memory and stages nothing.
  const std::int64_t row_bytes = 4 * static_cast<std::int64_t>(dtype_size(dtype));
  EXPECT_EQ(staged_out, dev->host_accessible() ? 0 : crossing * row_bytes) << "dispatch";
  EXPECT_EQ(staged_back, dev->host_accessible() ? 0 : returning * row_bytes) << "combine";
  EXPECT_EQ(staged_out + staged_back, dev->host_accessible() ? 0 : stats.bytes_sent);
}

// Flat, then hierarchical with one rank per node (every rank is its node's leader) and with
// two ranks per node (rows for other nodes relayed by the leaders).
void check_round_trip(const Placement& placement) {
  for (DType dtype : {DType::F32, DType::BF16})
    for (int ranks_per_node : {0, 1, 2}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + ", " +
                   (ranks_per_node == 0 ? std::string("flat") : "hierarchical, ranks per node " + std::to_string(ranks_per_node)));
      check_one_round_trip(placement, ranks_per_node, dtype);
    }
}

}  // namespace

TEST(AllToAllDispatcher, ContiguousPlacementRoundTrip) {
  auto w = world();
  check_round_trip(Placement::contiguous(2 * w->size(), w->size()));
}

TEST(AllToAllDispatcher, ScrambledPlacementRoundTrip) {
  auto w = world();
  const int experts = 3 * w->size();
  std::vector<std::vector<Replica>> replicas(static_cast<std::size_t>(experts));
  for (int e = 0; e < experts; ++e) replicas[static_cast<std::size_t>(e)] = {{(experts - 1 - e + e / 2) % w->size(), 1}};
  check_round_trip(Placement(w->size(), replicas));
}

TEST(AllToAllDispatcher, OneRankHoldsEveryExpert) {
  auto w = world();
  check_round_trip(Placement(w->size(), std::vector<std::vector<Replica>>(5, {{w->size() - 1, 1}})));
}

TEST(AllToAllDispatcher, ReplicatedExpertsWithUnevenShares) {
  auto w = world();
  const int p = w->size();
  std::vector<std::vector<Replica>> replicas;
  std::vector<Replica> everywhere;
  for (int r = 0; r < p; ++r) everywhere.push_back({r, r + 1});
  replicas.push_back(everywhere);                      // expert 0: a replica on every rank
  replicas.push_back({{0, 3}, {p - 1, 1}});            // expert 1: two replicas (one when p = 1), 3:1
  if (p == 1) replicas.back().pop_back();
  for (int e = 2; e < 2 + 2 * p; ++e) replicas.push_back({{(e * 7) % p, 1}});
  check_round_trip(Placement(p, replicas));
}

// parallel.dispatch_dtype = fp8: rows travel packed (d e4m3 bytes + an fp32 scale per 128
// values). The bytes sent are exactly a quarter of fp32's plus the scales, and what arrives
// dequantizes to the sender's own quantize-dequantize round trip.
TEST(AllToAllDispatcher, Fp8PackedRowsCostAQuarterOfFp32PlusScales) {
  auto w = world();
  TestDevice dev;
  const int p = w->size(), me = w->rank(), experts = 2 * p;
  const std::int64_t d = 256, block = 128, row_bytes = kernels::fp8_row_bytes(d, block);
  AllToAllDispatcher dispatcher(*w, Placement::contiguous(experts, p));
  std::vector<std::int64_t> per_expert;
  std::vector<float> values;
  std::mt19937 rng(static_cast<unsigned>(me + 1));
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int e = 0; e < experts; ++e) {
    per_expert.push_back(count(me, e));
    for (std::int64_t j = 0; j < count(me, e) * d; ++j) values.push_back(normal(rng));
  }
  const auto n = static_cast<std::int64_t>(values.size()) / d;
  Tensor rows = Tensor::from_host(dev, {n, d}, values), packed(dev, {n, row_bytes}, DType::U8), local(dev, {n, d});
  kernels::quantize_fp8({.x = &rows, .packed = &packed, .block = block});
  kernels::dequantize_fp8({.packed = &packed, .block = block, .y = &local});
  const DispatchPlan plan = dispatcher.plan(per_expert);
  Tensor arrived = dispatcher.dispatch(plan, packed);
  std::int64_t crossing = 0;
  for (int r = 0; r < p; ++r)
    if (r != me) crossing += plan.send_per_rank[static_cast<std::size_t>(r)];
  const DispatchStats stats = dispatcher.take_stats();
  EXPECT_EQ(stats.bytes_sent, crossing * row_bytes);
  EXPECT_EQ(4 * stats.bytes_sent, crossing * d * 4 + 4 * crossing * 4 * (d / block)) << "fp32 / 4 + the scales";
  // Back through combine (bytes travel unchanged), then dequantized: the sender's round trip.
  Tensor back = dispatcher.combine(plan, arrived), unpacked(dev, {n, d});
  kernels::dequantize_fp8({.packed = &back, .block = block, .y = &unpacked});
  EXPECT_EQ(unpacked.to_host(), local.to_host());
}

// The intra/inter-node split of the exchange's bytes and messages follows the nodes that
// Topology assigns (parallel.ranks_per_node), checked against the plan's per-rank rows.
TEST(AllToAllDispatcher, NodeAccountingFollowsTheTopology) {
  auto w = world();
  TestDevice dev;
  const int p = w->size(), me = w->rank(), experts = 2 * p;
  for (int ranks_per_node : {1, 2, p}) {
    Topology topology(*w, p, experts, ranks_per_node);
    EXPECT_EQ(topology.nodes(), (p + ranks_per_node - 1) / ranks_per_node);
    AllToAllDispatcher dispatcher(topology.ep_group(), Placement::contiguous(experts, p));
    dispatcher.set_nodes(topology.node_of_ep_rank());
    std::vector<std::int64_t> per_expert;
    for (int e = 0; e < experts; ++e) per_expert.push_back(count(me, e));
    const std::int64_t n = std::accumulate(per_expert.begin(), per_expert.end(), std::int64_t{0});
    Tensor input = Tensor::zeros(dev, {n, 4});
    const DispatchPlan plan = dispatcher.plan(per_expert);
    Tensor received = dispatcher.dispatch(plan, input);
    Tensor back = dispatcher.combine(plan, received);
    std::int64_t inter_rows = 0, inter_messages = 0, intra_messages = 0;
    for (int r = 0; r < p; ++r) {
      if (r == me) continue;
      const bool other_node = r / ranks_per_node != me / ranks_per_node;
      const auto i = static_cast<std::size_t>(r);
      for (std::int64_t rows : {plan.send_per_rank[i], plan.recv_per_rank[i]}) {  // dispatch, then combine
        if (other_node) inter_rows += rows;
        if (rows > 0) ++(other_node ? inter_messages : intra_messages);
      }
    }
    const DispatchStats stats = dispatcher.take_stats();
    EXPECT_EQ(stats.bytes_inter_node, inter_rows * 4 * static_cast<std::int64_t>(sizeof(float))) << ranks_per_node;
    EXPECT_EQ(stats.messages_inter_node, inter_messages) << ranks_per_node;
    EXPECT_EQ(stats.messages_intra_node, intra_messages) << ranks_per_node;
    if (ranks_per_node == 1) {
      EXPECT_EQ(stats.bytes_inter_node, stats.bytes_sent);
    }
    if (ranks_per_node == p) {
      EXPECT_EQ(stats.bytes_inter_node, 0);
    }
  }
}

// The hierarchical exchange moves the same inter-node bytes as the flat one, in one message
// per pair of nodes instead of one per pair of ranks on different nodes (summed over ranks,
// dispatch and combine, every rank sending to every expert).
TEST(AllToAllDispatcher, HierarchicalExchangeSendsOneMessagePerPairOfNodes) {
  auto w = world();
  TestDevice dev;
  const int p = w->size(), me = w->rank(), experts = 2 * p;
  for (int ranks_per_node : {1, 2}) {
    if (p % ranks_per_node != 0) continue;
    const std::int64_t nodes = p / ranks_per_node;
    std::int64_t totals[2][2] = {};  // [flat, hierarchical][inter-node bytes, inter-node messages]
    for (bool hierarchical : {false, true}) {
      Topology topology(*w, p, experts, ranks_per_node);
      AllToAllDispatcher dispatcher(topology.ep_group(), Placement::contiguous(experts, p));
      dispatcher.set_nodes(topology.node_of_ep_rank(), hierarchical);
      std::vector<std::int64_t> per_expert;
      for (int e = 0; e < experts; ++e) per_expert.push_back(count(me, e) + 1);
      const std::int64_t n = std::accumulate(per_expert.begin(), per_expert.end(), std::int64_t{0});
      Tensor input = Tensor::zeros(dev, {n, 4});
      const DispatchPlan plan = dispatcher.plan(per_expert);
      Tensor received = dispatcher.dispatch(plan, input);
      Tensor back = dispatcher.combine(plan, received);
      const DispatchStats stats = dispatcher.take_stats();
      totals[hierarchical][0] = w->all_reduce_value(stats.bytes_inter_node);
      totals[hierarchical][1] = w->all_reduce_value(stats.messages_inter_node);
    }
    SCOPED_TRACE(::testing::Message() << p << " ranks, " << nodes << " node(s)");
    EXPECT_EQ(totals[1][0], totals[0][0]);
    EXPECT_EQ(totals[0][1], 2 * p * (p - ranks_per_node));
    EXPECT_EQ(totals[1][1], 2 * nodes * (nodes - 1));
  }
}

}  // namespace moerun::test
