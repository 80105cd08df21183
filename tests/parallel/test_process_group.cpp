// ProcessGroup over MPI: closed-form collectives, payloads stamped with the sender's rank,
// and the same calls on the size-1 LocalGroup.
#include <gtest/gtest.h>

#include <numeric>

#include "expect_error.h"
#include "mpi_test_util.h"
#include "parallel/mpi_group.h"
#include "runtime/error.h"

namespace moerun::test {

TEST(MpiGroup, AllReduceSumsRanks) {
  auto w = world();
  const int p = w->size();
  std::vector<double> v = {static_cast<double>(w->rank()), 1.0};
  w->all_reduce(std::span<double>(v));
  EXPECT_EQ(v[0], p * (p - 1) / 2.0);
  EXPECT_EQ(v[1], p);
  EXPECT_EQ(w->all_reduce_value(std::int64_t{w->rank()}, ReduceOp::Max), p - 1);
}

TEST(MpiGroup, AsyncAllReduceCompletesOnWait) {
  auto w = world();
  std::vector<float> v(1000, 1.0f);
  auto req = w->all_reduce_async(v, ReduceOp::Sum);
  req->wait();
  EXPECT_EQ(v[999], static_cast<float>(w->size()));
}

// Several reductions in flight at once, of different sizes, waited out of order: each lands
// in its own buffer (they are staged out of place: MpiGroup::all_reduce_async), and a second
// round reuses the staging buffers the first gave back instead of allocating more.
TEST(MpiGroup, AsyncAllReducesInFlightTogetherLandInTheirOwnBuffers) {
  auto w = world();
  auto* mpi = dynamic_cast<MpiGroup*>(w.get());
  ASSERT_NE(mpi, nullptr);
  const int p = w->size(), r = w->rank();
  for (int round = 0; round < 2; ++round) {
    std::vector<std::vector<float>> buffers;
    for (int b = 0; b < 3; ++b) buffers.emplace_back(static_cast<std::size_t>(1000 * (b + 1)), float(r + 10 * b));
    std::vector<std::unique_ptr<CommRequest>> requests;
    for (auto& buffer : buffers) requests.push_back(w->all_reduce_async(buffer, ReduceOp::Sum));
    for (int b = 2; b >= 0; --b) requests[static_cast<std::size_t>(b)]->wait();
    for (int b = 0; b < 3; ++b)
      for (float x : buffers[static_cast<std::size_t>(b)]) ASSERT_EQ(x, float(p * (p - 1) / 2 + 10 * b * p)) << "buffer " << b;
    EXPECT_EQ(mpi->staging_bytes(), (1000 + 2000 + 3000) * sizeof(float)) << "round " << round;
  }
}

// bf16 has no MPI type: a user-defined sum adds in fp32 and rounds each partial sum to bf16.
// Values exact in bf16 whose sums stay exact (small integers) must come out exactly; values
// whose sums need rounding stay within one rounding per addition (u = 2^-8 relative).
TEST(MpiGroup, Bf16SumsAddInFp32) {
  auto w = world();
  const int p = w->size(), r = w->rank();
  std::vector<bfloat16> exact = {float_to_bf16(float(r)), float_to_bf16(1.0f), float_to_bf16(-2.0f * float(r))};
  w->all_reduce(std::span<bfloat16>(exact));
  EXPECT_EQ(bf16_to_float(exact[0]), p * (p - 1) / 2.0f);
  EXPECT_EQ(bf16_to_float(exact[1]), float(p));
  EXPECT_EQ(bf16_to_float(exact[2]), -float(p * (p - 1)));
  std::vector<bfloat16> rounded(300);
  double expected = 0.0;
  for (int q = 0; q < p; ++q) expected += bf16_to_float(float_to_bf16(1.0f + 0.001f * float(q + 1)));
  for (auto& x : rounded) x = float_to_bf16(1.0f + 0.001f * float(r + 1));
  w->all_reduce_async(std::span<bfloat16>(rounded), ReduceOp::Sum)->wait();
  for (const auto& x : rounded) EXPECT_NEAR(bf16_to_float(x), expected, (p - 1) * kBf16Epsilon * expected);
  expect_error<MpiError>([&] { w->all_reduce(std::span<bfloat16>(rounded), ReduceOp::Max); }, {"bf16 reductions support only sums"});
}

// ZeRO's pair: blocks of unequal size (block b has b + 2 elements); element i of rank r's
// buffer is 1000 r + i. After reduce_scatter, this rank's block holds the sums over ranks at
// its own offset; after all_gather_v, every block holds its owner's values.
TEST(MpiGroup, ReduceScatterThenAllGatherV) {
  auto w = world();
  const int p = w->size(), r = w->rank();
  std::vector<std::int64_t> counts(static_cast<std::size_t>(p));
  std::int64_t total = 0, offset = 0;
  for (int b = 0; b < p; ++b) {
    counts[static_cast<std::size_t>(b)] = b + 2;
    if (b < r) offset += b + 2;
    total += b + 2;
  }
  std::vector<float> buf(static_cast<std::size_t>(total));
  for (std::int64_t i = 0; i < total; ++i) buf[static_cast<std::size_t>(i)] = static_cast<float>(1000 * r + i);
  w->reduce_scatter_async(buf, counts, ReduceOp::Sum)->wait();
  for (std::int64_t i = offset; i < offset + r + 2; ++i)
    ASSERT_EQ(buf[static_cast<std::size_t>(i)], static_cast<float>(1000 * p * (p - 1) / 2 + p * i)) << "element " << i;
  // Mark this rank's block, gather everyone's.
  for (std::int64_t i = offset; i < offset + r + 2; ++i) buf[static_cast<std::size_t>(i)] = static_cast<float>(-r);
  w->all_gather_v(buf, counts);
  std::int64_t at = 0;
  for (int b = 0; b < p; ++b)
    for (std::int64_t i = 0; i < b + 2; ++i, ++at) ASSERT_EQ(buf[static_cast<std::size_t>(at)], static_cast<float>(-b)) << at;
}

TEST(MpiGroup, AllToAllVDeliversRankStampedPayloads) {
  auto w = world();
  const int p = w->size(), r = w->rank();
  // Rank r sends (r + 1) values to each peer j, each value = 100 * r + j.
  std::vector<std::int64_t> sc(p, r + 1), sd(p), rc(p), rd(p);
  for (int j = 0; j < p; ++j) {
    sd[j] = j * (r + 1);
    rc[j] = j + 1;
    rd[j] = j == 0 ? 0 : rd[j - 1] + rc[j - 1];
  }
  std::vector<float> send(static_cast<std::size_t>(p * (r + 1)));
  for (int j = 0; j < p; ++j)
    for (int i = 0; i <= r; ++i) send[static_cast<std::size_t>(j * (r + 1) + i)] = static_cast<float>(100 * r + j);
  std::vector<float> recv(static_cast<std::size_t>(rd[p - 1] + rc[p - 1]));
  w->all_to_all_v(send, sc, sd, recv, rc, rd);
  for (int j = 0; j < p; ++j)
    for (int i = 0; i <= j; ++i) EXPECT_EQ(recv[static_cast<std::size_t>(rd[j] + i)], static_cast<float>(100 * j + r));
}

TEST(MpiGroup, SplitAndNodeLocalGroups) {
  auto w = world();
  auto parity = w->split(w->rank() % 2, w->rank(), "parity");
  EXPECT_EQ(parity->size(), (w->size() + 1 - w->rank() % 2) / 2);
  auto node = w->split_node_local("node");
  EXPECT_EQ(node->size(), w->size());  // one machine
  EXPECT_EQ(node->all_reduce_value(std::int64_t{1}), w->size());
}

TEST(MpiGroup, ErrorsNameCallGroupAndRank) {
  auto w = world();
  try {
    const float one = 1.0f;
    w->send_async(std::span<const float>(&one, 1), w->size() + 5, 0)->wait();  // no such rank
    FAIL() << "expected MpiError";
  } catch (const MpiError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("MPI_Isend on world"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank"), std::string::npos) << msg;
  }
}

// Every rank sends a large message to the next rank and another to the one before, all posted
// before any receive is waited for: blocking sends in this order would deadlock above MPI's
// eager limit. Same-tag messages between two ranks arrive in the order they were posted.
TEST(MpiGroup, PointToPointMessagesAreNonBlockingAndKeepTheirOrder) {
  auto w = world();
  const int p = w->size(), me = w->rank();
  if (p < 2) GTEST_SKIP() << "needs a peer";
  const int next = (me + 1) % p, prev = (me + p - 1) % p;
  const std::size_t n = 1 << 20;  // 4 MiB of floats: far above the eager limit
  auto filled = [&](int from, int to, int which) {
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = float(from * 1000 + to * 10 + which) + float(i % 7);
    return v;
  };
  const std::vector<float> first = filled(me, next, 0), second = filled(me, next, 1), back = filled(me, prev, 2);
  std::vector<float> got_first(n), got_second(n), got_back(n);
  std::vector<std::unique_ptr<CommRequest>> pending;
  pending.push_back(w->send_async(first, next, 7));
  pending.push_back(w->send_async(second, next, 7));
  pending.push_back(w->send_async(back, prev, 8));
  pending.push_back(w->recv_async(std::span<float>(got_first), prev, 7));
  pending.push_back(w->recv_async(std::span<float>(got_second), prev, 7));
  pending.push_back(w->recv_async(std::span<float>(got_back), next, 8));
  for (auto& r : pending) r->wait();
  EXPECT_EQ(got_first, filled(prev, me, 0));
  EXPECT_EQ(got_second, filled(prev, me, 1));
  EXPECT_EQ(got_back, filled(next, me, 2));
}

// Typed buffers carry their length: a block outside the buffer is refused before MPI sees it
// (MPI would read or write past the end), with the call, the group and the numbers.
TEST(MpiGroup, BlocksOutsideTheBufferAreRefused) {
  auto w = world();
  const int p = w->size();
  std::vector<float> send(static_cast<std::size_t>(p)), recv(static_cast<std::size_t>(p) - 1);
  std::vector<std::int64_t> counts(static_cast<std::size_t>(p), 1), displs(static_cast<std::size_t>(p));
  for (int j = 0; j < p; ++j) displs[static_cast<std::size_t>(j)] = j;
  try {
    w->all_to_all_v(send, counts, displs, recv, counts, displs);
    FAIL() << "expected MpiError";
  } catch (const MpiError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("MPI_Alltoallv recv on world"), std::string::npos) << msg;
    EXPECT_NE(msg.find("the buffer holds " + std::to_string(p - 1)), std::string::npos) << msg;
  }
  std::vector<float> small(static_cast<std::size_t>(p));
  std::vector<std::int64_t> big(static_cast<std::size_t>(p), 2);
  EXPECT_THROW(w->all_gather_v(small, big), MpiError);
}

TEST(LocalGroup, BehavesAsAWorldOfOne) {
  LocalGroup g;
  std::vector<double> v = {3.0};
  g.all_reduce(std::span<double>(v));
  EXPECT_EQ(v[0], 3.0);
  std::vector<float> send = {1, 2, 3}, recv(3);
  const std::int64_t c[] = {3}, d[] = {0};
  g.all_to_all_v(send, c, d, recv, c, d);
  EXPECT_EQ(recv, send);
  EXPECT_THROW(g.send_async(send, 1, 0), MpiError);
}

}  // namespace moerun::test
