#include "parallel/eplb.h"

#include <algorithm>
#include <numeric>

#include "parallel/planner.h"
#include "runtime/error.h"

namespace moerun {
namespace {

// Every rank with a free slot already holds expert e: move another expert x from a full rank q
// that lacks e to a rank r with room that lacks x, so that q can take e. Returns q, or
// held.size() when no such exchange exists.
std::size_t make_room(std::vector<std::vector<int>>& held, std::vector<double>& rank_load, const std::vector<double>& loads,
                      const std::vector<int>& count, const std::vector<int>& own, int per_rank, int e) {
  auto holds = [&](std::size_t r, int x) { return std::count(held[r].begin(), held[r].end(), x) > 0; };
  auto per_replica = [&](int x) {
    const auto i = static_cast<std::size_t>(std::find(own.begin(), own.end(), x) - own.begin());
    return loads[static_cast<std::size_t>(x)] / count[i];
  };
  for (std::size_t r = 0; r < held.size(); ++r) {
    if (static_cast<int>(held[r].size()) >= per_rank) continue;
    for (std::size_t q = 0; q < held.size(); ++q) {
      if (q == r || holds(q, e)) continue;
      for (std::size_t i = 0; i < held[q].size(); ++i) {
        const int x = held[q][i];
        if (holds(r, x)) continue;
        held[r].push_back(x);
        rank_load[r] += per_replica(x);
        rank_load[q] -= per_replica(x);
        held[q].erase(held[q].begin() + static_cast<std::ptrdiff_t>(i));
        return q;
      }
    }
  }
  return held.size();
}

}  // namespace

Placement plan_eplb(const std::vector<double>& loads, int ep_size, int slots, const std::vector<int>& node_of_rank) {
  const int experts = static_cast<int>(loads.size());
  MOERUN_CHECK(ep_size > 0 && experts % ep_size == 0, ConfigError,
               "[eplb] {} experts do not divide over {} expert-parallel ranks", experts, ep_size);
  slots = std::max(slots, experts / ep_size);
  // The nodes of the EP group, and their ranks in order.
  std::vector<int> node_id = node_of_rank.empty() ? std::vector<int>(static_cast<std::size_t>(ep_size), 0) : node_of_rank;
  MOERUN_CHECK(static_cast<int>(node_id.size()) == ep_size, RuntimeError, "[eplb] {} node ids for {} ranks", node_id.size(), ep_size);
  std::vector<int> distinct = node_id;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  std::vector<std::vector<int>> ranks_of(distinct.size());
  for (int r = 0; r < ep_size; ++r) {
    const auto n = std::lower_bound(distinct.begin(), distinct.end(), node_id[static_cast<std::size_t>(r)]) - distinct.begin();
    ranks_of[static_cast<std::size_t>(n)].push_back(r);
  }
  bool equal_nodes = experts % static_cast<int>(distinct.size()) == 0;
  for (const auto& ranks : ranks_of) equal_nodes = equal_nodes && ranks.size() == ranks_of[0].size();
  if (!equal_nodes) ranks_of = {[&] { std::vector<int> all(static_cast<std::size_t>(ep_size)); std::iota(all.begin(), all.end(), 0); return all; }()};
  const std::size_t nodes = ranks_of.size();
  const int per_node = experts / static_cast<int>(nodes);

  // 1. Experts onto nodes: equal counts, heaviest first onto the lightest node with room.
  std::vector<std::vector<int>> experts_of(nodes);
  std::vector<double> node_load(nodes, 0.0);
  for (int e : heaviest_first(loads)) {
    std::size_t best = nodes;
    for (std::size_t n = 0; n < nodes; ++n)
      if (static_cast<int>(experts_of[n].size()) < per_node && (best == nodes || node_load[n] < node_load[best])) best = n;
    experts_of[best].push_back(e);
    node_load[best] += loads[static_cast<std::size_t>(e)];
  }

  std::vector<std::vector<Replica>> replicas(static_cast<std::size_t>(experts));
  for (std::size_t n = 0; n < nodes; ++n) {
    const std::vector<int>& ranks = ranks_of[n];
    const std::vector<int>& own = experts_of[n];
    // 2. Replicas within the node: one more for the highest load per replica, while slots last.
    std::vector<int> count(own.size(), 1);
    for (int spare = slots * static_cast<int>(ranks.size()) - static_cast<int>(own.size()); spare > 0; --spare) {
      std::size_t best = own.size();
      for (std::size_t i = 0; i < own.size(); ++i) {
        if (count[i] >= static_cast<int>(ranks.size())) continue;
        const double per = loads[static_cast<std::size_t>(own[i])] / count[i];
        if (best == own.size() || per > loads[static_cast<std::size_t>(own[best])] / count[best]) best = i;
      }
      if (best == own.size() || loads[static_cast<std::size_t>(own[best])] <= 0.0) break;
      ++count[best];
    }
    // 3. Replicas onto the node's ranks: heaviest per-replica load first, lightest rank with a
    // free slot that does not hold the expert yet. Equal counts per rank, as EPLB packs.
    std::vector<int> replica_expert;
    std::vector<double> replica_load;
    for (std::size_t i = 0; i < own.size(); ++i)
      for (int c = 0; c < count[i]; ++c) {
        replica_expert.push_back(own[i]);
        replica_load.push_back(loads[static_cast<std::size_t>(own[i])] / count[i]);
      }
    const int per_rank = static_cast<int>((replica_expert.size() + ranks.size() - 1) / ranks.size());
    std::vector<double> rank_load(ranks.size(), 0.0);
    std::vector<std::vector<int>> held(ranks.size());
    for (int j : heaviest_first(replica_load)) {
      const int e = replica_expert[static_cast<std::size_t>(j)];
      std::size_t best = ranks.size();
      for (std::size_t r = 0; r < ranks.size(); ++r) {
        if (static_cast<int>(held[r].size()) >= per_rank || std::count(held[r].begin(), held[r].end(), e) > 0) continue;
        if (best == ranks.size() || rank_load[r] < rank_load[best]) best = r;
      }
      if (best == ranks.size()) best = make_room(held, rank_load, loads, count, own, per_rank, e);
      MOERUN_CHECK(best < ranks.size(), RuntimeError, "[eplb] no rank of node {} can take another replica of expert {}", n, e);
      held[best].push_back(e);
      rank_load[best] += replica_load[static_cast<std::size_t>(j)];
    }
    for (std::size_t r = 0; r < ranks.size(); ++r)
      for (int e : held[r]) replicas[static_cast<std::size_t>(e)].push_back({ranks[r], 1});
  }
  for (auto& r : replicas) std::sort(r.begin(), r.end(), [](const Replica& a, const Replica& b) { return a.rank < b.rank; });
  return Placement(ep_size, std::move(replicas));
}

}  // namespace moerun
