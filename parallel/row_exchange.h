// RowExchange: how the payload of a token exchange travels between the ranks of an
// expert-parallel group, separate from the dispatcher's bookkeeping (which rows go where, and
// the permutations into and out of expert order). Two routes: flat (every pair of ranks
// directly, one all-to-all-v) and node-leader (node_leader_exchange.h: rows for other nodes
// relayed by each node's lowest rank). A new route — another transport, a compiled-accelerator
// collective — is one class here and one case in make_row_exchange.
//
// Collective contract: every rank of the group calls exchange() in the same order with
// matching row counts.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "parallel/process_group.h"
#include "parallel/token_dispatcher.h"

namespace moerun {

// rows_between(s, r): rows rank s sends to rank r in this exchange.
using RowsBetween = std::function<std::int64_t(int source, int dest)>;

class RowExchange {
 public:
  virtual ~RowExchange() = default;
  virtual std::string name() const = 0;  // "flat", "hierarchical"
  // (optional) true when the route needs every pair's row count (DispatchPlan::rank_matrix,
  // passed as rows_between): rows relayed by other ranks.
  virtual bool needs_rank_matrix() const { return false; }
  // send holds one block per destination rank r (send_rows[r] rows of row_bytes bytes each,
  // in rank order: any dtype); recv gets one block per source rank s (recv_rows[s] rows), in
  // rank order. Host
  // memory. The block from this rank to itself is left to the caller (it stays on the device).
  // Adds the messages and bytes this rank sent to `stats`.
  virtual void exchange(std::span<const std::uint8_t> send, std::span<const std::int64_t> send_rows, std::span<std::uint8_t> recv,
                        std::span<const std::int64_t> recv_rows, std::int64_t row_bytes, const RowsBetween& rows_between,
                        DispatchStats& stats) = 0;
};

// node_of_rank: the node of each rank of `group` (empty: all on one node), for the accounting
// of intra- and inter-node traffic and the node-leader route. Collective over `group` when
// hierarchical (it splits the node and leader groups).
std::unique_ptr<RowExchange> make_row_exchange(ProcessGroup& group, std::vector<int> node_of_rank, bool hierarchical);

// One message of `rows` rows of row_bytes bytes: bytes and message counts, by destination.
void count_message(DispatchStats& stats, std::int64_t rows, std::int64_t row_bytes, bool inter_node);

// Every rank directly: one all-to-all-v.
class FlatExchange final : public RowExchange {
 public:
  FlatExchange(ProcessGroup& group, std::vector<int> node_of_rank);
  std::string name() const override { return "flat"; }
  void exchange(std::span<const std::uint8_t> send, std::span<const std::int64_t> send_rows, std::span<std::uint8_t> recv,
                std::span<const std::int64_t> recv_rows, std::int64_t row_bytes, const RowsBetween& rows_between,
                DispatchStats& stats) override;

 private:
  ProcessGroup& group_;
  std::vector<int> node_of_rank_;
};

}  // namespace moerun
