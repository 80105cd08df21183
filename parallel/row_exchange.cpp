#include "parallel/row_exchange.h"

#include "parallel/node_leader_exchange.h"
#include "runtime/error.h"

namespace moerun {

void count_message(DispatchStats& stats, std::int64_t rows, std::int64_t row_bytes, bool inter_node) {
  if (rows <= 0) return;
  const std::int64_t bytes = rows * row_bytes;
  stats.rows_sent += rows;
  stats.bytes_sent += bytes;
  if (inter_node) stats.bytes_inter_node += bytes;
  ++(inter_node ? stats.messages_inter_node : stats.messages_intra_node);
}

std::unique_ptr<RowExchange> make_row_exchange(ProcessGroup& group, std::vector<int> node_of_rank, bool hierarchical) {
  MOERUN_CHECK(node_of_rank.empty() || static_cast<int>(node_of_rank.size()) == group.size(), RuntimeError,
               "[row exchange] {} node ids for an EP group of {}", node_of_rank.size(), group.size());
  if (hierarchical) return std::make_unique<NodeLeaderExchange>(group, std::move(node_of_rank));
  return std::make_unique<FlatExchange>(group, std::move(node_of_rank));
}

FlatExchange::FlatExchange(ProcessGroup& group, std::vector<int> node_of_rank)
    : group_(group), node_of_rank_(std::move(node_of_rank)) {}

void FlatExchange::exchange(std::span<const std::uint8_t> send, std::span<const std::int64_t> send_rows, std::span<std::uint8_t> recv,
                            std::span<const std::int64_t> recv_rows, std::int64_t row_bytes, const RowsBetween&,
                            DispatchStats& stats) {
  const int p = group_.size(), me = group_.rank();
  std::vector<std::int64_t> sc(static_cast<std::size_t>(p)), sd(sc), rc(sc), rd(sc);
  std::int64_t send_at = 0, recv_at = 0;
  for (int r = 0; r < p; ++r) {
    const auto i = static_cast<std::size_t>(r);
    sc[i] = r == me ? 0 : send_rows[i] * row_bytes;  // rows for this rank's own experts stay on the device
    rc[i] = r == me ? 0 : recv_rows[i] * row_bytes;
    sd[i] = send_at * row_bytes;
    rd[i] = recv_at * row_bytes;
    send_at += send_rows[i];
    recv_at += recv_rows[i];
    if (r != me)
      count_message(stats, send_rows[i], row_bytes, !node_of_rank_.empty() && node_of_rank_[i] != node_of_rank_[static_cast<std::size_t>(me)]);
  }
  group_.all_to_all_v(send, sc, sd, recv, rc, rd);
}

}  // namespace moerun
