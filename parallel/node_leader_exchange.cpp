#include "parallel/node_leader_exchange.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "runtime/error.h"

namespace moerun {

NodeLeaderExchange::NodeLeaderExchange(ProcessGroup& group, std::vector<int> node_of_rank) : group_(group) {
  const int p = group_.size(), me = group_.rank();
  auto node = [&](int r) { return node_of_rank.empty() ? 0 : node_of_rank[static_cast<std::size_t>(r)]; };
  std::map<int, std::vector<int>> by_node;  // ascending node id: the leader group's order
  for (int r = 0; r < p; ++r) by_node[node(r)].push_back(r);
  for (auto& [id, ranks] : by_node) nodes_.push_back(ranks);
  node_ranks_ = by_node.at(node(me));
  while (nodes_[my_node_].front() != node_ranks_.front()) ++my_node_;
  node_group_ = group_.split(node(me), me, "node");
  leader_group_ = group_.split(node_ranks_.front() == me ? 0 : -1, node(me), "node leaders");
}

void NodeLeaderExchange::exchange(std::span<const std::uint8_t> send, std::span<const std::int64_t> send_rows,
                                  std::span<std::uint8_t> recv, std::span<const std::int64_t> recv_rows, std::int64_t row_bytes,
                                  const RowsBetween& rows_between, DispatchStats& stats) {
  const int p = group_.size(), me = group_.rank();
  const auto q = static_cast<std::size_t>(node_group_->size());
  const std::vector<std::int64_t> send_at = block_offsets(send_rows), recv_at = block_offsets(recv_rows);
  std::vector<bool> on_my_node(static_cast<std::size_t>(p), false);
  for (int r : node_ranks_) on_my_node[static_cast<std::size_t>(r)] = true;
  const bool leader = leader_group_ != nullptr;
  const std::size_t my_node = my_node_;
  auto zeros = [](std::size_t n) { return std::vector<std::int64_t>(n, 0); };
  auto append = [row_bytes](std::vector<std::uint8_t>& out, const std::uint8_t* from, std::int64_t rows) {
    out.insert(out.end(), from, from + rows * row_bytes);
  };

  // 1. Within the node, directly: rank to rank, into place.
  {
    auto sc = zeros(q), sd = zeros(q), rc = zeros(q), rd = zeros(q);
    for (std::size_t j = 0; j < q; ++j) {
      const auto r = static_cast<std::size_t>(node_ranks_[j]);
      sc[j] = node_ranks_[j] == me ? 0 : send_rows[r] * row_bytes;
      rc[j] = node_ranks_[j] == me ? 0 : recv_rows[r] * row_bytes;
      sd[j] = send_at[r] * row_bytes;
      rd[j] = recv_at[r] * row_bytes;
      if (node_ranks_[j] != me) count_message(stats, send_rows[r], row_bytes, false);
    }
    node_group_->all_to_all_v(send, sc, sd, recv, rc, rd);
  }

  // 2. Rows for other nodes go to the leader: [member][destination rank, ascending].
  std::vector<std::uint8_t> outgoing;
  for (int r = 0; r < p; ++r)
    if (!on_my_node[static_cast<std::size_t>(r)]) append(outgoing, send.data() + send_at[static_cast<std::size_t>(r)] * row_bytes, send_rows[static_cast<std::size_t>(r)]);
  std::vector<std::uint8_t> gathered;
  {
    auto sc = zeros(q), rc = zeros(q);
    sc[0] = static_cast<std::int64_t>(outgoing.size());
    if (leader) {
      for (std::size_t j = 0; j < q; ++j)
        for (int r = 0; r < p; ++r)
          if (!on_my_node[static_cast<std::size_t>(r)]) rc[j] += rows_between(node_ranks_[j], r) * row_bytes;
      gathered.resize(static_cast<std::size_t>(std::accumulate(rc.begin(), rc.end(), std::int64_t{0})));
    }
    if (!leader) count_message(stats, sc[0] / row_bytes, row_bytes, false);
    node_group_->all_to_all_v(outgoing, sc, zeros(q), gathered, rc, block_offsets(rc));
  }

  // 3. Leaders: one message per pair of nodes, [destination rank][source rank] inside.
  std::vector<std::uint8_t> arrived;  // [source node][destination rank here][source rank]
  if (leader) {
    const std::size_t nodes = nodes_.size();
    std::map<std::pair<std::size_t, int>, std::int64_t> at;  // (member, destination) -> offset in gathered
    std::int64_t offset = 0;
    for (std::size_t j = 0; j < q; ++j)
      for (int r = 0; r < p; ++r)
        if (!on_my_node[static_cast<std::size_t>(r)]) {
          at[{j, r}] = offset;
          offset += rows_between(node_ranks_[j], r) * row_bytes;
        }
    std::vector<std::uint8_t> to_nodes;
    auto sc = zeros(nodes), rc = zeros(nodes);
    for (std::size_t b = 0; b < nodes; ++b) {
      if (b == my_node) continue;
      const std::size_t before = to_nodes.size();
      for (int r : nodes_[b])
        for (std::size_t j = 0; j < q; ++j) append(to_nodes, gathered.data() + at[{j, r}], rows_between(node_ranks_[j], r));
      sc[b] = static_cast<std::int64_t>(to_nodes.size() - before);
      count_message(stats, sc[b] / row_bytes, row_bytes, true);
      for (int r : node_ranks_)
        for (int s : nodes_[b]) rc[b] += rows_between(s, r) * row_bytes;
    }
    arrived.resize(static_cast<std::size_t>(std::accumulate(rc.begin(), rc.end(), std::int64_t{0})));
    leader_group_->all_to_all_v(to_nodes, sc, block_offsets(sc), arrived, rc, block_offsets(rc));
  }

  // 4. The leader scatters: member r gets [source node][source rank] of its rows.
  std::vector<std::uint8_t> scattered, mine;
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
          for (int s : nodes_[a]) offset += rows_between(s, r) * row_bytes;
      }
      for (std::size_t j = 0; j < q; ++j) {
        const std::size_t before = scattered.size();
        for (std::size_t a = 0; a < nodes_.size(); ++a) {
          if (a == my_node) continue;
          for (int s : nodes_[a]) {
            append(scattered, arrived.data() + cursor[a], rows_between(s, node_ranks_[j]));
            cursor[a] += rows_between(s, node_ranks_[j]) * row_bytes;
          }
        }
        sc[j] = static_cast<std::int64_t>(scattered.size() - before);
        if (j > 0) count_message(stats, sc[j] / row_bytes, row_bytes, false);
      }
    }
    for (std::size_t a = 0; a < nodes_.size(); ++a)
      if (a != my_node)
        for (int s : nodes_[a]) rc[0] += rows_between(s, me) * row_bytes;
    mine.resize(static_cast<std::size_t>(rc[0]));
    node_group_->all_to_all_v(scattered, sc, block_offsets(sc), mine, rc, zeros(q));
  }
  std::int64_t taken = 0;
  for (std::size_t a = 0; a < nodes_.size(); ++a) {
    if (a == my_node) continue;
    for (int s : nodes_[a]) {
      const std::int64_t rows = rows_between(s, me);
      MOERUN_CHECK(rows == recv_rows[static_cast<std::size_t>(s)], RuntimeError,
                   "[hierarchical exchange] {} rows from rank {} routed but {} expected", rows, s,
                   recv_rows[static_cast<std::size_t>(s)]);
      std::copy(mine.begin() + taken, mine.begin() + taken + rows * row_bytes, recv.begin() + recv_at[static_cast<std::size_t>(s)] * row_bytes);
      taken += rows * row_bytes;
    }
  }
}

}  // namespace moerun
