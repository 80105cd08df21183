#include "parallel/all_to_all_dispatcher.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <numeric>
#include <utility>

#include "kernels/index.h"
#include "parallel/host_access.h"
#include "runtime/error.h"
#include "runtime/trace.h"

namespace moerun {

namespace {
using Clock = std::chrono::steady_clock;

std::vector<std::int32_t> inverse(const std::vector<std::int32_t>& perm) {
  std::vector<std::int32_t> inv(perm.size());
  for (std::size_t i = 0; i < perm.size(); ++i) inv[static_cast<std::size_t>(perm[i])] = static_cast<std::int32_t>(i);
  return inv;
}

// out[i] = rows[index[i]] on the device.
Tensor permute(const Tensor& rows, const std::vector<std::int32_t>& index) {
  Device& dev = rows.device();
  Tensor idx = Tensor::from_host(dev, {static_cast<std::int64_t>(index.size())}, index);
  Tensor out(dev, {static_cast<std::int64_t>(index.size()), rows.dim(1)}, rows.dtype());
  kernels::gather_rows({.src = &rows, .index = &idx, .dst = &out});
  return out;
}
}  // namespace

AllToAllDispatcher::AllToAllDispatcher(ProcessGroup& ep_group, Placement placement)
    : group_(ep_group), placement_(Placement::contiguous(1, 1)), exchange_(make_row_exchange(ep_group, {}, false)) {
  set_placement(std::move(placement));
}

void AllToAllDispatcher::set_nodes(std::vector<int> node_of_rank, bool hierarchical) {
  exchange_ = make_row_exchange(group_, std::move(node_of_rank), hierarchical);
}

void AllToAllDispatcher::set_placement(Placement placement) {
  MOERUN_CHECK(placement.ep_size() == group_.size(), RuntimeError,
               "[dispatcher] placement for an ep group of {} but the group has {} ranks", placement.ep_size(),
               group_.size());
  placement_ = std::move(placement);
  local_ = placement_.local_experts(group_.rank());
}

DispatchPlan AllToAllDispatcher::plan(std::span<const std::int64_t> rows_per_expert) {
  const auto start = Clock::now();
  const int p = group_.size(), me = group_.rank();
  const auto l = static_cast<std::int64_t>(local_.size());
  MOERUN_CHECK(static_cast<int>(rows_per_expert.size()) == placement_.experts(), RuntimeError,
               "[dispatch plan] {} expert counts for {} experts", rows_per_expert.size(), placement_.experts());
  DispatchPlan plan;
  plan.send_per_expert.assign(rows_per_expert.begin(), rows_per_expert.end());
  plan.send_per_rank.assign(static_cast<std::size_t>(p), 0);
  std::vector<std::int64_t> counts, count_sizes(static_cast<std::size_t>(p)), recv_sizes(static_cast<std::size_t>(p), l);
  for (int r = 0; r < p; ++r) {
    const auto experts = placement_.local_experts(r);
    count_sizes[static_cast<std::size_t>(r)] = static_cast<std::int64_t>(experts.size());
    for (int e : experts) {
      const std::int64_t c = placement_.split(e, me, rows_per_expert[static_cast<std::size_t>(e)])[static_cast<std::size_t>(r)];
      counts.push_back(c);
      plan.send_per_rank[static_cast<std::size_t>(r)] += c;
    }
  }
  plan.recv_matrix.assign(static_cast<std::size_t>(p * l), 0);
  group_.all_to_all_v(counts, count_sizes, block_offsets(count_sizes), plan.recv_matrix, recv_sizes, block_offsets(recv_sizes));
  plan.recv_per_rank.assign(static_cast<std::size_t>(p), 0);
  plan.recv_per_local_expert.assign(static_cast<std::size_t>(l), 0);
  for (int s = 0; s < p; ++s) {
    for (std::int64_t j = 0; j < l; ++j) {
      const std::int64_t c = plan.recv_matrix[static_cast<std::size_t>(s * l + j)];
      plan.recv_per_rank[static_cast<std::size_t>(s)] += c;
      plan.recv_per_local_expert[static_cast<std::size_t>(j)] += c;
    }
  }
  if (exchange_->needs_rank_matrix()) {  // relayed rows: every rank needs the whole matrix
    plan.rank_matrix.assign(static_cast<std::size_t>(p) * static_cast<std::size_t>(p), 0);
    group_.all_gather(plan.send_per_rank, plan.rank_matrix);
  }
  plan.rows_received = std::accumulate(plan.recv_per_rank.begin(), plan.recv_per_rank.end(), std::int64_t{0});
  plan.rows_sent_remote = std::accumulate(plan.send_per_rank.begin(), plan.send_per_rank.end(), std::int64_t{0}) -
                          plan.send_per_rank[static_cast<std::size_t>(me)];
  if (!placement_.rank_contiguous()) plan.send_order = by_rank_order(plan);
  stats_.seconds += std::chrono::duration<double>(Clock::now() - start).count();
  return plan;
}

std::vector<std::int32_t> AllToAllDispatcher::by_expert_order(const DispatchPlan& plan) const {
  const int p = group_.size();
  const auto l = static_cast<std::int64_t>(local_.size());
  const std::vector<std::int64_t> offset = block_offsets(plan.recv_matrix);  // [s][l] layout, s-major
  std::vector<std::int32_t> index;
  index.reserve(static_cast<std::size_t>(plan.rows_received));
  for (std::int64_t j = 0; j < l; ++j)
    for (int s = 0; s < p; ++s) {
      const auto cell = static_cast<std::size_t>(s * l + j);
      for (std::int64_t i = 0; i < plan.recv_matrix[cell]; ++i) index.push_back(static_cast<std::int32_t>(offset[cell] + i));
    }
  return index;
}

std::vector<std::int32_t> AllToAllDispatcher::by_rank_order(const DispatchPlan& plan) const {
  // Expert e's rows are one block in expert order; the placement splits the block into
  // consecutive chunks for its replicas' ranks, in rank order.
  const int p = group_.size(), me = group_.rank();
  const std::vector<std::int64_t> offset = block_offsets(plan.send_per_expert);
  std::vector<std::vector<std::int64_t>> chunk_start(static_cast<std::size_t>(placement_.experts()));
  std::vector<std::vector<std::int64_t>> chunk_rows(chunk_start.size());
  for (int e = 0; e < placement_.experts(); ++e) {
    chunk_rows[static_cast<std::size_t>(e)] = placement_.split(e, me, plan.send_per_expert[static_cast<std::size_t>(e)]);
    chunk_start[static_cast<std::size_t>(e)] = block_offsets(chunk_rows[static_cast<std::size_t>(e)]);
  }
  std::vector<std::int32_t> index;
  for (int r = 0; r < p; ++r)
    for (int e : placement_.local_experts(r)) {
      const auto ue = static_cast<std::size_t>(e), ur = static_cast<std::size_t>(r);
      for (std::int64_t i = 0; i < chunk_rows[ue][ur]; ++i)
        index.push_back(static_cast<std::int32_t>(offset[ue] + chunk_start[ue][ur] + i));
    }
  return index;
}

void AllToAllDispatcher::exchange(const Tensor& send, std::span<const std::int64_t> send_rows, Tensor& recv,
                                  std::span<const std::int64_t> recv_rows, const RowsBetween& rows_between) {
  const auto start = Clock::now();
  const auto row_bytes = static_cast<std::int64_t>(send.dim(1) * dtype_size(send.dtype()));
  const auto self = static_cast<std::size_t>(group_.rank());
  const std::vector<std::int64_t> send_at = block_offsets(send_rows), recv_at = block_offsets(recv_rows);
  {
    // The own block stays on the device: only the rows that cross ranks are staged.
    auto own = [&](const std::vector<std::int64_t>& at, std::span<const std::int64_t> rows, bool end) {
      return static_cast<std::size_t>((at[self] + (end ? rows[self] : 0)) * row_bytes);
    };
    HostAccess send_host(send, HostAccess::Read, own(send_at, send_rows, false), own(send_at, send_rows, true));
    HostAccess recv_host(recv, HostAccess::Write, own(recv_at, recv_rows, false), own(recv_at, recv_rows, true));
    exchange_->exchange(std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(send_host.data()), send.bytes()),
                        send_rows, std::span<std::uint8_t>(static_cast<std::uint8_t*>(recv_host.data()), recv.bytes()),
                        recv_rows, row_bytes, rows_between, stats_);
  }
  // Rows for this rank's own experts never leave the device.
  Tensor own = recv.rows(recv_at[self], recv_at[self] + recv_rows[self]);
  own.copy_from(send.rows(send_at[self], send_at[self] + send_rows[self]));
  stats_.seconds += std::chrono::duration<double>(Clock::now() - start).count();
}

Tensor AllToAllDispatcher::dispatch(const DispatchPlan& plan, const Tensor& rows) {
  const trace::Scope span("all-to-all", "dispatch");
  Tensor received(rows.device(), {plan.rows_received, rows.dim(1)}, rows.dtype());  // [source][local expert]
  const auto p = static_cast<std::size_t>(group_.size());
  exchange(rows, plan.send_per_rank, received, plan.recv_per_rank, [&](int s, int r) {
    return plan.rank_matrix[static_cast<std::size_t>(s) * p + static_cast<std::size_t>(r)];
  });
  if (group_.size() == 1 || local_.size() <= 1) return received;  // already grouped by expert
  return permute(received, by_expert_order(plan));
}

Tensor AllToAllDispatcher::combine(const DispatchPlan& plan, const Tensor& rows) {
  const trace::Scope span("all-to-all", "combine");
  Tensor by_source = (group_.size() == 1 || local_.size() <= 1) ? rows.view() : permute(rows, inverse(by_expert_order(plan)));
  const std::int64_t sent = std::accumulate(plan.send_per_rank.begin(), plan.send_per_rank.end(), std::int64_t{0});
  Tensor back(rows.device(), {sent, rows.dim(1)}, rows.dtype());
  const auto p = static_cast<std::size_t>(group_.size());
  exchange(by_source, plan.recv_per_rank, back, plan.send_per_rank, [&](int s, int r) {  // the reverse routes
    return plan.rank_matrix[static_cast<std::size_t>(r) * p + static_cast<std::size_t>(s)];
  });
  return back;
}

Tensor AllToAllDispatcher::exchange_equal(const Tensor& send) {
  const std::int64_t per_rank = send.dim(0) / group_.size();
  const std::vector<std::int64_t> rows(static_cast<std::size_t>(group_.size()), per_rank);
  Tensor recv(send.device(), send.shape(), send.dtype());
  exchange(send, rows, recv, rows, [per_rank](int, int) { return per_rank; });
  return recv;
}

Tensor AllToAllDispatcher::dispatch_static(const Tensor& rows, std::int64_t capacity) {
  const trace::Scope span("all-to-all", "dispatch (static)");
  MOERUN_CHECK(static_slots_ > 0, RuntimeError, "[static dispatch] no expert slots set (set_static_slots)");
  return permute(exchange_equal(rows), slot_major(capacity));  // [source][slot][capacity] -> [slot][source][capacity]
}

Tensor AllToAllDispatcher::combine_static(const Tensor& rows, std::int64_t capacity) {
  const trace::Scope span("all-to-all", "combine (static)");
  return exchange_equal(permute(rows, inverse(slot_major(capacity))));
}

Tensor AllToAllDispatcher::exchange_block_labels(const Tensor& labels) {
  const trace::Scope span("all-to-all", "block labels");
  return exchange_equal(labels);
}

Tensor AllToAllDispatcher::dispatch_blocks(const Tensor& rows) {
  const trace::Scope span("all-to-all", "dispatch (blocks)");
  return exchange_equal(rows);
}

Tensor AllToAllDispatcher::combine_blocks(const Tensor& rows) {
  const trace::Scope span("all-to-all", "combine (blocks)");
  return exchange_equal(rows);
}

std::vector<std::int32_t> AllToAllDispatcher::slot_major(std::int64_t capacity) const {
  // Whole slots move: row (q, j, c) of the source-major layout goes to (j, q, c). Every slot,
  // occupied or not, so that the shape is the same whatever the placement.
  const std::int64_t p = group_.size(), s = static_slots_;
  std::vector<std::int32_t> index;
  index.reserve(static_cast<std::size_t>(s * p * capacity));
  for (std::int64_t j = 0; j < s; ++j)
    for (std::int64_t q = 0; q < p; ++q)
      for (std::int64_t c = 0; c < capacity; ++c) index.push_back(static_cast<std::int32_t>((q * s + j) * capacity + c));
  return index;
}

DispatchStats AllToAllDispatcher::take_stats() { return std::exchange(stats_, DispatchStats{}); }

}  // namespace moerun
