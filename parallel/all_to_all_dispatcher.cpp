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

std::vector<std::int64_t> prefix(std::span<const std::int64_t> counts) {
  std::vector<std::int64_t> out(counts.size(), 0);
  for (std::size_t i = 1; i < counts.size(); ++i) out[i] = out[i - 1] + counts[i - 1];
  return out;
}

std::vector<std::int32_t> inverse(const std::vector<std::int32_t>& perm) {
  std::vector<std::int32_t> inv(perm.size());
  for (std::size_t i = 0; i < perm.size(); ++i) inv[static_cast<std::size_t>(perm[i])] = static_cast<std::int32_t>(i);
  return inv;
}

// out[i] = rows[index[i]] on the device.
Tensor permute(const Tensor& rows, const std::vector<std::int32_t>& index) {
  Device& dev = rows.device();
  Tensor idx = Tensor::from_host(dev, {static_cast<std::int64_t>(index.size())}, index);
  Tensor out(dev, {static_cast<std::int64_t>(index.size()), rows.dim(1)});
  kernels::gather_rows({.src = &rows, .index = &idx, .dst = &out});
  return out;
}
}  // namespace

AllToAllDispatcher::AllToAllDispatcher(ProcessGroup& ep_group, Placement placement)
    : group_(ep_group), placement_(Placement::contiguous(1, 1)) {
  set_placement(std::move(placement));
}

void AllToAllDispatcher::set_nodes(std::vector<int> node_of_rank, bool hierarchical) {
  node_of_rank_ = std::move(node_of_rank);
  node_group_.reset();
  leader_group_.reset();
  nodes_.clear();
  node_ranks_.clear();
  if (!hierarchical) return;
  const int p = group_.size(), me = group_.rank();
  MOERUN_CHECK(node_of_rank_.empty() || static_cast<int>(node_of_rank_.size()) == p, RuntimeError,
               "[dispatcher] {} node ids for an EP group of {}", node_of_rank_.size(), p);
  auto node = [&](int r) { return node_of_rank_.empty() ? 0 : node_of_rank_[static_cast<std::size_t>(r)]; };
  std::map<int, std::vector<int>> by_node;  // ascending node id: the leader group's order
  for (int r = 0; r < p; ++r) by_node[node(r)].push_back(r);
  for (auto& [id, ranks] : by_node) nodes_.push_back(ranks);
  node_ranks_ = by_node.at(node(me));
  node_group_ = group_.split(node(me), me, "node");
  leader_group_ = group_.split(node_ranks_.front() == me ? 0 : -1, node(me), "node leaders");
}

void AllToAllDispatcher::count_message(std::int64_t rows, std::int64_t d, bool inter_node) {
  if (rows <= 0) return;
  const std::int64_t bytes = rows * d * static_cast<std::int64_t>(sizeof(float));
  stats_.rows_sent += rows;
  stats_.bytes_sent += bytes;
  if (inter_node) stats_.bytes_inter_node += bytes;
  ++(inter_node ? stats_.messages_inter_node : stats_.messages_intra_node);
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
  group_.all_to_all_v(counts.data(), count_sizes, prefix(count_sizes), plan.recv_matrix.data(), recv_sizes,
                      prefix(recv_sizes), CommType::I64);
  plan.recv_per_rank.assign(static_cast<std::size_t>(p), 0);
  plan.recv_per_local_expert.assign(static_cast<std::size_t>(l), 0);
  for (int s = 0; s < p; ++s) {
    for (std::int64_t j = 0; j < l; ++j) {
      const std::int64_t c = plan.recv_matrix[static_cast<std::size_t>(s * l + j)];
      plan.recv_per_rank[static_cast<std::size_t>(s)] += c;
      plan.recv_per_local_expert[static_cast<std::size_t>(j)] += c;
    }
  }
  if (hierarchical()) {  // leaders route other ranks' rows: everyone needs the whole matrix
    plan.rank_matrix.assign(static_cast<std::size_t>(p) * static_cast<std::size_t>(p), 0);
    group_.all_gather(plan.send_per_rank.data(), plan.rank_matrix.data(), p, CommType::I64);
  }
  plan.rows_received = std::accumulate(plan.recv_per_rank.begin(), plan.recv_per_rank.end(), std::int64_t{0});
  plan.rows_sent_remote = std::accumulate(plan.send_per_rank.begin(), plan.send_per_rank.end(), std::int64_t{0}) -
                          plan.send_per_rank[static_cast<std::size_t>(me)];
  stats_.seconds += std::chrono::duration<double>(Clock::now() - start).count();
  return plan;
}

std::vector<std::int32_t> AllToAllDispatcher::by_expert_order(const DispatchPlan& plan) const {
  const int p = group_.size();
  const auto l = static_cast<std::int64_t>(local_.size());
  const std::vector<std::int64_t> offset = prefix(plan.recv_matrix);  // [s][l] layout, s-major
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
  const std::vector<std::int64_t> offset = prefix(plan.send_per_expert);
  std::vector<std::vector<std::int64_t>> chunk_start(static_cast<std::size_t>(placement_.experts()));
  std::vector<std::vector<std::int64_t>> chunk_rows(chunk_start.size());
  for (int e = 0; e < placement_.experts(); ++e) {
    chunk_rows[static_cast<std::size_t>(e)] = placement_.split(e, me, plan.send_per_expert[static_cast<std::size_t>(e)]);
    chunk_start[static_cast<std::size_t>(e)] = prefix(chunk_rows[static_cast<std::size_t>(e)]);
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
                                  std::span<const std::int64_t> recv_rows,
                                  const std::function<std::int64_t(int, int)>& rows_between) {
  const auto start = Clock::now();
  const int p = group_.size(), me = group_.rank();
  const std::int64_t d = send.dim(1);
  const std::vector<std::int64_t> send_at = prefix(send_rows), recv_at = prefix(recv_rows);
  {
    HostAccess send_host(send, HostAccess::Read);
    HostAccess recv_host(recv, HostAccess::Write);
    if (hierarchical()) {
      exchange_via_leaders(static_cast<const float*>(send_host.data()), send_rows, static_cast<float*>(recv_host.data()),
                           recv_rows, d, rows_between);
    } else {
      std::vector<std::int64_t> sc(static_cast<std::size_t>(p)), sd(sc), rc(sc), rd(sc);
      for (int r = 0; r < p; ++r) {
        const auto i = static_cast<std::size_t>(r);
        sc[i] = r == me ? 0 : send_rows[i] * d;  // rows for this rank's own experts stay on the device
        rc[i] = r == me ? 0 : recv_rows[i] * d;
        sd[i] = send_at[i] * d;
        rd[i] = recv_at[i] * d;
        if (r != me)
          count_message(send_rows[i], d, !node_of_rank_.empty() && node_of_rank_[i] != node_of_rank_[static_cast<std::size_t>(me)]);
      }
      group_.all_to_all_v(send_host.data(), sc, sd, recv_host.data(), rc, rd, CommType::F32);
    }
  }
  const auto self = static_cast<std::size_t>(me);
  Tensor own = recv.rows(recv_at[self], recv_at[self] + recv_rows[self]);
  own.copy_from(send.rows(send_at[self], send_at[self] + send_rows[self]));
  stats_.seconds += std::chrono::duration<double>(Clock::now() - start).count();
}

void AllToAllDispatcher::exchange_via_leaders(const float* send, std::span<const std::int64_t> send_rows, float* recv,
                                              std::span<const std::int64_t> recv_rows, std::int64_t d,
                                              const std::function<std::int64_t(int, int)>& rows_between) {
  const int p = group_.size(), me = group_.rank();
  const auto q = static_cast<std::size_t>(node_group_->size());
  const std::vector<std::int64_t> send_at = prefix(send_rows), recv_at = prefix(recv_rows);
  std::vector<bool> on_my_node(static_cast<std::size_t>(p), false);
  for (int r : node_ranks_) on_my_node[static_cast<std::size_t>(r)] = true;
  const bool leader = leader_group_ != nullptr;
  std::size_t my_node = 0;
  while (nodes_[my_node].front() != node_ranks_.front()) ++my_node;
  auto zeros = [](std::size_t n) { return std::vector<std::int64_t>(n, 0); };
  auto displacements = [](const std::vector<std::int64_t>& counts) { return prefix(counts); };
  auto append = [d](std::vector<float>& out, const float* from, std::int64_t rows) {
    out.insert(out.end(), from, from + rows * d);
  };

  // 1. Within the node, directly: rank to rank, into place.
  {
    auto sc = zeros(q), sd = zeros(q), rc = zeros(q), rd = zeros(q);
    for (std::size_t j = 0; j < q; ++j) {
      const auto r = static_cast<std::size_t>(node_ranks_[j]);
      sc[j] = node_ranks_[j] == me ? 0 : send_rows[r] * d;
      rc[j] = node_ranks_[j] == me ? 0 : recv_rows[r] * d;
      sd[j] = send_at[r] * d;
      rd[j] = recv_at[r] * d;
      if (node_ranks_[j] != me) count_message(send_rows[r], d, false);
    }
    node_group_->all_to_all_v(send, sc, sd, recv, rc, rd, CommType::F32);
  }

  // 2. Rows for other nodes go to the leader: [member][destination rank, ascending].
  std::vector<float> outgoing;
  for (int r = 0; r < p; ++r)
    if (!on_my_node[static_cast<std::size_t>(r)]) append(outgoing, send + send_at[static_cast<std::size_t>(r)] * d, send_rows[static_cast<std::size_t>(r)]);
  std::vector<float> gathered;
  {
    auto sc = zeros(q), rc = zeros(q);
    sc[0] = static_cast<std::int64_t>(outgoing.size());
    if (leader) {
      for (std::size_t j = 0; j < q; ++j)
        for (int r = 0; r < p; ++r)
          if (!on_my_node[static_cast<std::size_t>(r)]) rc[j] += rows_between(node_ranks_[j], r) * d;
      gathered.resize(static_cast<std::size_t>(std::accumulate(rc.begin(), rc.end(), std::int64_t{0})));
    }
    if (!leader) count_message(sc[0] / d, d, false);
    node_group_->all_to_all_v(outgoing.data(), sc, zeros(q), gathered.data(), rc, displacements(rc), CommType::F32);
  }

  // 3. Leaders: one message per pair of nodes, [destination rank][source rank] inside.
  std::vector<float> arrived;  // [source node][destination rank here][source rank]
  if (leader) {
    const std::size_t nodes = nodes_.size();
    std::map<std::pair<std::size_t, int>, std::int64_t> at;  // (member, destination) -> offset in gathered
    std::int64_t offset = 0;
    for (std::size_t j = 0; j < q; ++j)
      for (int r = 0; r < p; ++r)
        if (!on_my_node[static_cast<std::size_t>(r)]) {
          at[{j, r}] = offset;
          offset += rows_between(node_ranks_[j], r) * d;
        }
    std::vector<float> to_nodes;
    auto sc = zeros(nodes), rc = zeros(nodes);
    for (std::size_t b = 0; b < nodes; ++b) {
      if (b == my_node) continue;
      const std::size_t before = to_nodes.size();
      for (int r : nodes_[b])
        for (std::size_t j = 0; j < q; ++j) append(to_nodes, gathered.data() + at[{j, r}], rows_between(node_ranks_[j], r));
      sc[b] = static_cast<std::int64_t>(to_nodes.size() - before);
      count_message(sc[b] / d, d, true);
      for (int r : node_ranks_)
        for (int s : nodes_[b]) rc[b] += rows_between(s, r) * d;
    }
    arrived.resize(static_cast<std::size_t>(std::accumulate(rc.begin(), rc.end(), std::int64_t{0})));
    leader_group_->all_to_all_v(to_nodes.data(), sc, displacements(sc), arrived.data(), rc, displacements(rc), CommType::F32);
  }

  // 4. The leader scatters: member r gets [source node][source rank] of its rows.
  std::vector<float> scattered, mine;
  {
    auto sc = zeros(q), rc = zeros(q);
    if (leader) {
      // Where member j's rows from each source node start in `arrived`: the members come in
      // order inside each node's block, so one cursor per source node walks it.
      std::vector<std::int64_t> cursor(nodes_.size(), 0);
      std::int64_t offset = 0;
      for (std::size_t a = 0; a < nodes_.size(); ++a) {
        if (a == my_node) continue;
        cursor[a] = offset;
        for (int r : node_ranks_)
          for (int s : nodes_[a]) offset += rows_between(s, r) * d;
      }
      for (std::size_t j = 0; j < q; ++j) {
        const std::size_t before = scattered.size();
        for (std::size_t a = 0; a < nodes_.size(); ++a) {
          if (a == my_node) continue;
          for (int s : nodes_[a]) {
            append(scattered, arrived.data() + cursor[a], rows_between(s, node_ranks_[j]));
            cursor[a] += rows_between(s, node_ranks_[j]) * d;
          }
        }
        sc[j] = static_cast<std::int64_t>(scattered.size() - before);
        if (j > 0) count_message(sc[j] / d, d, false);
      }
    }
    for (std::size_t a = 0; a < nodes_.size(); ++a)
      if (a != my_node)
        for (int s : nodes_[a]) rc[0] += rows_between(s, me) * d;
    mine.resize(static_cast<std::size_t>(rc[0]));
    node_group_->all_to_all_v(scattered.data(), sc, displacements(sc), mine.data(), rc, zeros(q), CommType::F32);
  }
  std::int64_t taken = 0;
  for (std::size_t a = 0; a < nodes_.size(); ++a) {
    if (a == my_node) continue;
    for (int s : nodes_[a]) {
      const std::int64_t rows = rows_between(s, me);
      MOERUN_CHECK(rows == recv_rows[static_cast<std::size_t>(s)], RuntimeError,
                   "[hierarchical exchange] {} rows from rank {} routed but {} expected", rows, s,
                   recv_rows[static_cast<std::size_t>(s)]);
      std::copy(mine.begin() + taken, mine.begin() + taken + rows * d, recv + recv_at[static_cast<std::size_t>(s)] * d);
      taken += rows * d;
    }
  }
}

Tensor AllToAllDispatcher::dispatch(const DispatchPlan& plan, const Tensor& rows) {
  const trace::Scope span("all-to-all", "dispatch");
  Tensor by_rank = placement_.rank_contiguous() ? rows.view() : permute(rows, by_rank_order(plan));
  Tensor received(rows.device(), {plan.rows_received, rows.dim(1)});  // [source][local expert]
  const auto p = static_cast<std::size_t>(group_.size());
  exchange(by_rank, plan.send_per_rank, received, plan.recv_per_rank, [&](int s, int r) {
    return plan.rank_matrix[static_cast<std::size_t>(s) * p + static_cast<std::size_t>(r)];
  });
  if (group_.size() == 1 || local_.size() <= 1) return received;  // already grouped by expert
  return permute(received, by_expert_order(plan));
}

Tensor AllToAllDispatcher::combine(const DispatchPlan& plan, const Tensor& rows) {
  const trace::Scope span("all-to-all", "combine");
  Tensor by_source = (group_.size() == 1 || local_.size() <= 1) ? rows.view() : permute(rows, inverse(by_expert_order(plan)));
  const std::int64_t sent = std::accumulate(plan.send_per_rank.begin(), plan.send_per_rank.end(), std::int64_t{0});
  Tensor back(rows.device(), {sent, rows.dim(1)});
  const auto p = static_cast<std::size_t>(group_.size());
  exchange(by_source, plan.recv_per_rank, back, plan.send_per_rank, [&](int s, int r) {  // the reverse routes
    return plan.rank_matrix[static_cast<std::size_t>(r) * p + static_cast<std::size_t>(s)];
  });
  if (placement_.rank_contiguous()) return back;
  return permute(back, inverse(by_rank_order(plan)));
}

DispatchStats AllToAllDispatcher::take_stats() { return std::exchange(stats_, DispatchStats{}); }

}  // namespace moerun
