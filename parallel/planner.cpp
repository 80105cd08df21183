#include "parallel/planner.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <numeric>

#include "parallel/collective_cost.h"
#include "parallel/eplb.h"
#include "parallel/incremental_plan.h"
#include "runtime/error.h"

namespace moerun {

std::string balance_policy_name(BalancePolicy p) {
  switch (p) {
    case BalancePolicy::None: return "none";
    case BalancePolicy::Migrate: return "migrate";
    case BalancePolicy::Replicate: return "replicate";
    case BalancePolicy::Auto: return "auto";
    case BalancePolicy::Eplb: return "eplb";
  }
  return "?";
}

std::vector<double> expected_rank_loads(const std::vector<double>& loads, const Placement& placement) {
  const int p = placement.ep_size();
  std::vector<double> rank(static_cast<std::size_t>(p), 0.0);
  for (int e = 0; e < placement.experts(); ++e) {
    // Every source sends an equal part; a replica keeps its own rank's part and gets its share
    // of the parts of the sources without a replica.
    const std::vector<Replica>& replicas = placement.replicas(e);
    const double per_source = loads[static_cast<std::size_t>(e)] / p;
    const double away = per_source * double(p - static_cast<int>(replicas.size()));
    double shares = 0.0;
    for (const Replica& r : replicas) shares += double(r.share);
    for (const Replica& r : replicas) rank[static_cast<std::size_t>(r.rank)] += per_source + away * double(r.share) / shares;
  }
  return rank;
}

std::vector<double> replica_reduce_wire_bytes(const Placement& placement, double grad_bytes) {
  std::vector<double> wire(static_cast<std::size_t>(placement.ep_size()), 0.0);
  for (int e = 0; e < placement.experts(); ++e) {
    const auto k = static_cast<int>(placement.replicas(e).size());
    for (const Replica& r : placement.replicas(e)) wire[static_cast<std::size_t>(r.rank)] += ring_all_reduce_wire_bytes(grad_bytes, k);
  }
  return wire;
}

Prediction predict(const std::vector<std::vector<double>>& loads, const std::vector<Placement>& placements,
                   const CostModel& cost) {
  Prediction pr;
  pr.step_seconds = cost.fixed_seconds;
  for (std::size_t l = 0; l < placements.size(); ++l) {
    const Placement& pl = placements[l];
    const std::vector<double> rank = expected_rank_loads(loads[l], pl);
    const double mx = *std::max_element(rank.begin(), rank.end());
    const double mean = std::accumulate(rank.begin(), rank.end(), 0.0) / double(rank.size());
    pr.layer_imbalance.push_back(mean > 0 ? mx / mean : 1.0);
    pr.imbalance = std::max(pr.imbalance, pr.layer_imbalance.back());
    const std::vector<int> held = pl.slots_used_per_rank();
    double slowest = 0.0;  // the rank whose experts finish last: its copies and its experts' fixed work
    for (std::size_t r = 0; r < rank.size(); ++r)
      slowest = std::max(slowest, rank[r] * cost.seconds_per_copy + held[r] * cost.seconds_per_held_expert);
    pr.step_seconds += slowest;
    // Copies that cross ranks: sources without a local replica send theirs to the replicas.
    // The exchange lasts as long as its busiest rank sends or receives: a rank holding hot
    // experts receives from every other rank, which an average would hide.
    const auto p = static_cast<std::size_t>(pl.ep_size());
    // Each source sends its part of every expert it does not hold: all parts less the held ones.
    std::vector<double> sent(p, 0.0), received(p, 0.0);
    double crossing = 0.0, all_parts = 0.0;
    for (int e = 0; e < pl.experts(); ++e) {
      const double per_source = loads[l][static_cast<std::size_t>(e)] / double(p);
      double shares = 0.0;
      for (const Replica& r : pl.replicas(e)) shares += double(r.share);
      const double away = per_source * double(p - pl.replicas(e).size());
      crossing += away;
      all_parts += per_source;
      for (const Replica& r : pl.replicas(e)) {
        received[static_cast<std::size_t>(r.rank)] += away * double(r.share) / shares;
        sent[static_cast<std::size_t>(r.rank)] -= per_source;
      }
    }
    for (double& s : sent) s += all_parts;
    pr.crossing_copies += crossing / double(p);
    const double busiest = std::max(*std::max_element(sent.begin(), sent.end()), *std::max_element(received.begin(), received.end()));
    pr.step_seconds += busiest * cost.bytes_per_copy / cost.bandwidth;
    if (cost.replica_grad_bytes > 0 && cost.reduce_bandwidth > 0) {
      const std::vector<double> wire = replica_reduce_wire_bytes(pl, cost.replica_grad_bytes);
      const double reduce = *std::max_element(wire.begin(), wire.end()) / cost.reduce_bandwidth;
      pr.replica_reduce_seconds += reduce;
      pr.step_seconds += reduce;
    }
  }
  return pr;
}

double migration_bytes(const std::vector<Placement>& from, const std::vector<Placement>& to, const CostModel& cost) {
  double bytes = 0.0;
  for (std::size_t l = 0; l < to.size(); ++l) bytes += to[l].replicas_added_since(from[l]) * cost.expert_state_bytes;
  return bytes;
}

namespace {

struct Item {
  int expert;
  double load;
};
using Bins = std::vector<std::vector<Item>>;  // [rank] the replicas it holds

double bin_load(const std::vector<Item>& bin) {
  double s = 0.0;
  for (const Item& i : bin) s += i.load;
  return s;
}

bool has_expert(const std::vector<Item>& bin, int expert, const Item* except = nullptr) {
  for (const Item& i : bin)
    if (i.expert == expert && &i != except) return true;
  return false;
}

// Local search: repeatedly take the heaviest rank and apply the move (to a rank with a free
// slot) or swap that lowers it most without raising the other rank above it. A rank never
// holds two replicas of one expert.
void improve(Bins& bins, int slots, bool allow_moves) {
  constexpr double kEps = 1e-9;
  for (int iteration = 0; iteration < 10000; ++iteration) {
    std::size_t b = 0;
    for (std::size_t r = 1; r < bins.size(); ++r)
      if (bin_load(bins[r]) > bin_load(bins[b])) b = r;
    const double lb = bin_load(bins[b]);
    double best = lb;
    std::size_t best_i = 0, best_c = 0, best_j = 0;
    bool best_is_move = false, found = false;
    for (std::size_t i = 0; i < bins[b].size(); ++i) {
      const Item& x = bins[b][i];
      for (std::size_t c = 0; c < bins.size(); ++c) {
        if (c == b) continue;
        const double lc = bin_load(bins[c]);
        if (allow_moves && static_cast<int>(bins[c].size()) < slots && !has_expert(bins[c], x.expert)) {
          const double m = std::max(lb - x.load, lc + x.load);
          if (m < best - kEps) best = m, best_i = i, best_c = c, best_is_move = true, found = true;
        }
        for (std::size_t j = 0; j < bins[c].size(); ++j) {
          const Item& y = bins[c][j];
          if (y.expert == x.expert || has_expert(bins[c], x.expert, &y) || has_expert(bins[b], y.expert, &x)) continue;
          const double m = std::max(lb - x.load + y.load, lc - y.load + x.load);
          if (m < best - kEps) best = m, best_i = i, best_c = c, best_j = j, best_is_move = false, found = true;
        }
      }
    }
    if (!found) return;
    if (best_is_move) {
      bins[best_c].push_back(bins[b][best_i]);
      bins[b].erase(bins[b].begin() + static_cast<std::ptrdiff_t>(best_i));
    } else {
      std::swap(bins[b][best_i], bins[best_c][best_j]);
    }
  }
}

double max_bin(const Bins& bins) {
  double m = 0.0;
  for (const auto& b : bins) m = std::max(m, bin_load(b));
  return m;
}

Placement to_placement(const Bins& bins, int experts) {
  std::vector<std::vector<Replica>> replicas(static_cast<std::size_t>(experts));
  for (std::size_t r = 0; r < bins.size(); ++r)
    for (const Item& i : bins[r]) replicas[static_cast<std::size_t>(i.expert)].push_back({static_cast<int>(r), 1});
  return Placement(static_cast<int>(bins.size()), std::move(replicas));
}

}  // namespace

std::vector<int> heaviest_first(const std::vector<double>& weights) {
  std::vector<int> order(weights.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return weights[static_cast<std::size_t>(a)] > weights[static_cast<std::size_t>(b)]; });
  return order;
}

Placement plan_migrate(const std::vector<double>& loads, const Placement& current) {
  // Longest-processing-time bin packing with equal slots per rank (a permutation: no copies).
  const int p = current.ep_size(), experts = current.experts(), slots = experts / p;
  std::vector<double> bin_load(static_cast<std::size_t>(p), 0.0);
  std::vector<std::vector<int>> bins(static_cast<std::size_t>(p));
  for (int e : heaviest_first(loads)) {
    int best = -1;
    for (int b = 0; b < p; ++b) {
      if (static_cast<int>(bins[static_cast<std::size_t>(b)].size()) >= slots) continue;
      if (best < 0 || bin_load[static_cast<std::size_t>(b)] < bin_load[static_cast<std::size_t>(best)]) best = b;
    }
    bins[static_cast<std::size_t>(best)].push_back(e);
    bin_load[static_cast<std::size_t>(best)] += loads[static_cast<std::size_t>(e)];
  }
  // Bins are interchangeable: give each to the rank that already holds most of its experts,
  // so that as little state as possible moves.
  // Greedy: the (bin, rank) pair sharing most experts first (ties: lower bin, then lower rank),
  // then the bins left, in order, onto the ranks left, in order. Only pairs that share an
  // expert are listed, so this is linear in the replicas rather than cubic in the ranks.
  struct Pair {
    int overlap, bin, rank;
  };
  std::vector<Pair> pairs;
  for (int b = 0; b < p; ++b) {
    std::vector<int> shared;  // ranks holding one of this bin's experts, once per expert
    for (int e : bins[static_cast<std::size_t>(b)])
      for (const Replica& r : current.replicas(e)) shared.push_back(r.rank);
    std::sort(shared.begin(), shared.end());
    for (std::size_t i = 0; i < shared.size();) {
      std::size_t j = i;
      while (j < shared.size() && shared[j] == shared[i]) ++j;
      pairs.push_back({static_cast<int>(j - i), b, shared[i]});
      i = j;
    }
  }
  std::sort(pairs.begin(), pairs.end(), [](const Pair& x, const Pair& y) {
    return x.overlap != y.overlap ? x.overlap > y.overlap : x.bin != y.bin ? x.bin < y.bin : x.rank < y.rank;
  });
  std::vector<int> rank_of_bin(static_cast<std::size_t>(p), -1);
  std::vector<bool> rank_taken(static_cast<std::size_t>(p), false);
  for (const Pair& pair : pairs) {
    if (rank_of_bin[static_cast<std::size_t>(pair.bin)] >= 0 || rank_taken[static_cast<std::size_t>(pair.rank)]) continue;
    rank_of_bin[static_cast<std::size_t>(pair.bin)] = pair.rank;
    rank_taken[static_cast<std::size_t>(pair.rank)] = true;
  }
  int next_rank = 0;
  for (int b = 0; b < p; ++b) {
    if (rank_of_bin[static_cast<std::size_t>(b)] >= 0) continue;
    while (rank_taken[static_cast<std::size_t>(next_rank)]) ++next_rank;
    rank_of_bin[static_cast<std::size_t>(b)] = next_rank;
    rank_taken[static_cast<std::size_t>(next_rank)] = true;
  }
  Bins packed(static_cast<std::size_t>(p));
  for (int b = 0; b < p; ++b)
    for (int e : bins[static_cast<std::size_t>(b)])
      packed[static_cast<std::size_t>(rank_of_bin[static_cast<std::size_t>(b)])].push_back({e, loads[static_cast<std::size_t>(e)]});
  improve(packed, slots, /*allow_moves=*/false);
  // Second candidate: swaps starting from the current placement (moves few experts).
  Bins from_current(static_cast<std::size_t>(p));
  for (int e = 0; e < experts; ++e) from_current[static_cast<std::size_t>(current.replicas(e)[0].rank)].push_back({e, loads[static_cast<std::size_t>(e)]});
  improve(from_current, slots, /*allow_moves=*/false);
  Placement a = to_placement(packed, experts), b = to_placement(from_current, experts);
  const double ma = max_bin(packed), mb = max_bin(from_current);
  if (mb < ma - 1e-9 || (mb <= ma + 1e-9 && b.replicas_added_since(current) <= a.replicas_added_since(current))) return b;
  return a;
}

Placement plan_replicate(const std::vector<double>& loads, const Placement& current, int max_experts_per_rank) {
  // Replica counts roughly proportional to load within the slot budget, then the replicas'
  // loads packed onto ranks (heaviest first, least-loaded rank with a free slot that does
  // not already hold the expert; ties prefer a rank that holds it now).
  const int p = current.ep_size(), experts = current.experts();
  const int slots = std::max(max_experts_per_rank, (experts + p - 1) / p);
  std::vector<int> count(static_cast<std::size_t>(experts), 1);
  for (int extra = slots * p - experts; extra > 0; --extra) {
    int best = -1;
    double best_per_replica = 0.0;
    for (int e = 0; e < experts; ++e) {
      if (count[static_cast<std::size_t>(e)] >= p) continue;
      const double per = loads[static_cast<std::size_t>(e)] / count[static_cast<std::size_t>(e)];
      if (best < 0 || per > best_per_replica) best = e, best_per_replica = per;
    }
    if (best < 0 || best_per_replica <= 0.0) break;
    ++count[static_cast<std::size_t>(best)];
  }
  std::vector<Item> items;
  for (int e = 0; e < experts; ++e)
    for (int i = 0; i < count[static_cast<std::size_t>(e)]; ++i)
      items.push_back({e, loads[static_cast<std::size_t>(e)] / count[static_cast<std::size_t>(e)]});
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.load > b.load; });
  Bins bins(static_cast<std::size_t>(p));
  for (const Item& it : items) {
    int best = -1;
    for (int r = 0; r < p; ++r) {
      const auto& bin = bins[static_cast<std::size_t>(r)];
      if (has_expert(bin, it.expert) || static_cast<int>(bin.size()) >= slots) continue;
      if (best < 0) {
        best = r;
        continue;
      }
      const double lb = bin_load(bins[static_cast<std::size_t>(best)]), lr = bin_load(bin);
      if (lr < lb || (lr == lb && current.holds(r, it.expert) && !current.holds(best, it.expert))) best = r;
    }
    MOERUN_CHECK(best >= 0, RuntimeError, "[planner] no slot left for a replica of expert {} ({} slots per rank)",
                 it.expert, slots);
    bins[static_cast<std::size_t>(best)].push_back(it);
  }
  improve(bins, slots, /*allow_moves=*/true);
  return to_placement(bins, experts);
}

Placement plan_incremental(const std::vector<double>& loads, const Placement& current, int max_experts_per_rank,
                           const CostModel& cost, double saving_steps) {
  // Each snapshot of the walk judged alone for this layer: its saving over `saving_steps`
  // steps less the time to move its states. The walk's first changes relieve the busiest rank
  // most per byte, so the best stopping point is usually well before its end.
  auto layer_seconds = [&](const Placement& p) {
    CostModel layer = cost;
    layer.fixed_seconds = 0.0;
    return predict({loads}, {p}, layer).step_seconds;
  };
  const double now = layer_seconds(current);
  std::vector<IncrementalStep> steps = incremental_placements(loads, current, max_experts_per_rank);
  std::size_t best = 0;
  double best_net = 0.0;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const double net = (now - layer_seconds(steps[i].placement)) * saving_steps -
                       steps[i].states_moved * cost.expert_state_bytes / cost.migration_bandwidth;
    if (i == 0 || net > best_net) best_net = net, best = i;
  }
  return steps.empty() ? current : std::move(steps[best].placement);
}

namespace {

using Loads = std::vector<std::vector<double>>;  // [layer][expert]
using StepLoads = std::vector<Loads>;            // [step][layer][expert]
using Plan = std::vector<Placement>;             // [layer]

// The step time a placement is judged by: predicted from each of `steps` loads, the median
// (or from the averaged `loads` when no steps are given).
double judged_step_seconds(const Loads& loads, const StepLoads& steps, const Plan& placements, const CostModel& cost) {
  if (steps.empty()) return predict(loads, placements, cost).step_seconds;
  std::vector<double> per_step;
  for (const auto& step : steps) per_step.push_back(predict(step, placements, cost).step_seconds);
  std::sort(per_step.begin(), per_step.end());
  const std::size_t n = per_step.size();
  return n % 2 == 1 ? per_step[n / 2] : 0.5 * (per_step[n / 2 - 1] + per_step[n / 2]);
}

Loads mean_loads(const StepLoads& steps) {
  Loads mean = steps.front();
  for (std::size_t s = 1; s < steps.size(); ++s)
    for (std::size_t l = 0; l < mean.size(); ++l)
      for (std::size_t e = 0; e < mean[l].size(); ++e) mean[l][e] += steps[s][l][e];
  for (auto& layer : mean)
    for (double& x : layer) x /= double(steps.size());
  return mean;
}

struct Choice {
  BalancePolicy policy = BalancePolicy::None;
  Plan placements;
  double judged = 0.0;          // seconds per step, judged on the steps it was fitted to
  double judged_current = 0.0;  // the current placement's, judged on the same steps
  double bytes = 0.0;           // of expert state to move there
};

// The candidates fitted to one set of loads that do not depend on how much of their saving is
// expected (the re-packs of the tried policies, in the order they compete), judged once.
struct Fitted {
  const Loads& loads;
  const StepLoads& steps;
  std::vector<Choice> repacked;
};

Fitted fit(const PlannerInput& in, const Loads& loads, const StepLoads& steps) {
  Fitted f{.loads = loads, .steps = steps, .repacked = {}};
  const double judged_current = judged_step_seconds(loads, steps, in.current, in.cost);
  std::vector<BalancePolicy> tried;
  if (in.policy == BalancePolicy::Auto) tried = {BalancePolicy::Migrate, BalancePolicy::Replicate};
  else tried = {in.policy};
  for (BalancePolicy policy : tried) {
    Plan plan;
    for (std::size_t l = 0; l < in.current.size(); ++l) {
      const Placement& now = in.current[l];
      if (policy == BalancePolicy::Migrate) plan.push_back(plan_migrate(loads[l], now));
      else if (policy == BalancePolicy::Eplb) plan.push_back(plan_eplb(loads[l], now.ep_size(), in.max_experts_per_rank, in.node_of_rank));
      else plan.push_back(plan_replicate(loads[l], now, in.max_experts_per_rank));
    }
    const double judged = judged_step_seconds(loads, steps, plan, in.cost);
    const double bytes = migration_bytes(in.current, plan, in.cost);
    f.repacked.push_back({.policy = policy, .placements = std::move(plan), .judged = judged,
                          .judged_current = judged_current, .bytes = bytes});
  }
  return f;
}

// The best candidate: largest saving over the interval, expected at `share` of its prediction,
// less its migration time; equal nets take fewer bytes. replicate also tries changes around
// the current placement (few bytes to move, plan_incremental), which depend on the share.
Choice best_candidate(const PlannerInput& in, const Fitted& fitted, double share) {
  const double saving_steps = share * in.interval;
  const Choice* best = nullptr;
  double best_net = 0.0;
  auto consider = [&](const Choice& c) {
    // balance.force asks for a change: a candidate that keeps the placement loses to any other.
    if (in.force && best != nullptr && c.placements == in.current) return;
    const bool replaces_current = in.force && best != nullptr && best->placements == in.current;
    const double net = (c.judged_current - c.judged) * saving_steps - c.bytes / in.cost.migration_bandwidth;
    if (best == nullptr || replaces_current || net > best_net + 1e-12 || (net >= best_net - 1e-12 && c.bytes < best->bytes)) {
      best = &c;
      best_net = net;
    }
  };
  for (const Choice& c : fitted.repacked) consider(c);
  Choice incremental;
  if (in.policy == BalancePolicy::Auto || in.policy == BalancePolicy::Replicate) {
    Plan plan;
    for (std::size_t l = 0; l < in.current.size(); ++l)
      plan.push_back(plan_incremental(fitted.loads[l], in.current[l], in.max_experts_per_rank, in.cost, saving_steps));
    const double judged = judged_step_seconds(fitted.loads, fitted.steps, plan, in.cost);
    const double bytes = migration_bytes(in.current, plan, in.cost);
    incremental = {.policy = BalancePolicy::Replicate, .placements = std::move(plan), .judged = judged,
                   .judged_current = fitted.repacked.front().judged_current, .bytes = bytes};
    consider(incremental);
  }
  return *best;
}

// The share of a fitted placement's saving that outlasts the loads it was fitted to: what the
// placement this planner would have chosen from the earlier steps saves on the recent ones,
// over the larger of what it promised on the earlier steps and what `now` (fitted to the recent
// steps) promises on them, clamped to [0, 1]. The larger: an imbalance that is new since the
// earlier steps (they promised nothing) has not persisted yet either. 1 when there are no
// earlier steps, or nothing to gain now.
double persisting_share(const PlannerInput& in, const Choice& now) {
  const double available = now.judged_current - now.judged;
  if (in.earlier_loads.empty() || in.recent_loads.empty() || available <= 0.0) return 1.0;
  const Loads earlier = mean_loads(in.earlier_loads);
  const Choice then = best_candidate(in, fit(in, earlier, in.earlier_loads), in.cost.realized_gain);
  const double promised = then.judged_current - then.judged;
  const double kept = now.judged_current - judged_step_seconds(in.loads, in.recent_loads, then.placements, in.cost);
  return std::clamp(kept / std::max(promised, available), 0.0, 1.0);
}

// The static layout (Placement::contiguous, what policy none keeps) for every layer, as a
// candidate. It is fitted to no loads, and neither is the current placement fitted to the
// recent steps it is judged on (it was fitted an interval or more ago): judged on them, its
// saving over the current placement is what the next steps can expect, with no persistence
// discount. When loads move after a change, the placement fitted to the old loads can become
// worse than never having changed; this is the way back for that case, which the measured way
// back (the steps right after a change) cannot see.
Choice home_candidate(const PlannerInput& in, double judged_current) {
  Plan plan;
  for (const Placement& now : in.current) plan.push_back(Placement::contiguous(now.experts(), now.ep_size()));
  const double judged = judged_step_seconds(in.loads, in.recent_loads, plan, in.cost);
  const double bytes = migration_bytes(in.current, plan, in.cost);
  return {.policy = BalancePolicy::None, .placements = std::move(plan), .judged = judged, .judged_current = judged_current,
          .bytes = bytes};
}

// Seconds a candidate saves over `interval` steps at `share` of its judged saving, less its migration.
double net_seconds(const PlannerInput& in, const Choice& c, double share) {
  return (c.judged_current - c.judged) * share * in.interval - c.bytes / in.cost.migration_bandwidth;
}

std::string expected_note(const CostModel& cost, double persistence) {
  std::vector<std::string> parts;
  if (cost.realized_gain < 1.0) parts.push_back(fmt::format("the {:.0f}% past changes realized", 100 * cost.realized_gain));
  if (persistence < 1.0) parts.push_back(fmt::format("the {:.0f}% a placement fitted to earlier steps kept", 100 * persistence));
  if (parts.empty()) return "";
  return fmt::format(" (at {})", fmt::join(parts, " and "));
}

}  // namespace

PlannerDecision plan_placement(const PlannerInput& in) {
  PlannerDecision d;
  d.placements = in.current;
  d.before = predict(in.loads, in.current, in.cost);
  d.after = d.before;
  if (in.policy == BalancePolicy::None) {
    d.reason = "policy none";
    return d;
  }
  if (!in.force && !in.previous.empty() && in.last_change_slowdown > in.min_gain) {
    // The last change was predicted to save and measured slower: the measurement outranks the
    // model. Go back, when the loss over the next interval exceeds the cost of moving back
    // (else plan as usual).
    const double bytes = migration_bytes(in.current, in.previous, in.cost);
    const double seconds = bytes / in.cost.migration_bandwidth;
    if (in.last_change_slowdown * d.before.step_seconds * in.interval > seconds) {
      d.apply = d.reverted = true;
      d.placements = in.previous;
      d.after = predict(in.loads, in.previous, in.cost);
      d.migrate_bytes = bytes;
      d.migrate_seconds = seconds;
      d.reason = fmt::format("the last change measured {:.1f}% slower passes (beyond balance.min_gain {:.1f}%): back to "
                             "the placement before it",
                             100 * in.last_change_slowdown, 100 * in.min_gain);
      return d;
    }
  }
  const double judged_current = judged_step_seconds(in.loads, in.recent_loads, in.current, in.cost);
  const Choice home = home_candidate(in, judged_current);
  const bool balanced = d.before.imbalance <= in.threshold;
  // The fitted candidate at the share past changes realized; chosen again when less of a fitted
  // saving persists (fewer steps' saving: the cheaper changes win). Below the threshold only
  // the static layout is a candidate (a held replica's upkeep can outlast its imbalance).
  Choice best{.policy = BalancePolicy::None, .placements = in.current, .judged = judged_current,
              .judged_current = judged_current, .bytes = 0.0};
  double share = in.cost.realized_gain;
  if (in.force || !balanced) {
    const Fitted fitted = fit(in, in.loads, in.recent_loads);
    best = best_candidate(in, fitted, in.cost.realized_gain);
    d.persistence = persisting_share(in, best);
    share = in.cost.realized_gain * d.persistence;
    if (d.persistence < 1.0) best = best_candidate(in, fitted, share);
  }
  if (!in.force && home.placements != in.current && net_seconds(in, home, in.cost.realized_gain) > net_seconds(in, best, share)) {
    best = home;
    d.persistence = 1.0;  // fitted to no loads: nothing to discount
    share = in.cost.realized_gain;
    d.home = true;
  } else if (!in.force && balanced) {
    d.reason = fmt::format("imbalance {:.3f} <= threshold {:.3f}", d.before.imbalance, in.threshold);
    return d;
  }
  d.chosen = best.policy;
  d.after = predict(in.loads, best.placements, in.cost);
  d.placements = std::move(best.placements);
  d.migrate_bytes = best.bytes;
  // Step times as judged (the median over recent steps when they are given), for the gates
  // and the events: what is compared with the measured step time later.
  d.before.step_seconds = best.judged_current;
  d.after.step_seconds = best.judged;
  d.migrate_seconds = d.migrate_bytes / in.cost.migration_bandwidth;
  d.gain_seconds = (d.before.step_seconds - d.after.step_seconds) * share * in.interval;
  bool same = true;
  for (std::size_t l = 0; l < in.current.size(); ++l) same = same && d.placements[l] == in.current[l];
  if (same) {
    d.reason = "the best placement is the current one";
  } else if (!in.force && (d.before.step_seconds - d.after.step_seconds) * share < in.min_gain * d.before.step_seconds) {
    d.reason = fmt::format("expected gain {:.1f}% of the step (predicted {:.1f}%{}{}) is below balance.min_gain {:.1f}%",
                           100 * share * (d.before.step_seconds - d.after.step_seconds) / d.before.step_seconds,
                           100 * (d.before.step_seconds - d.after.step_seconds) / d.before.step_seconds,
                           in.recent_loads.empty() ? "" : fmt::format(", median over the last {} steps", in.recent_loads.size()),
                           expected_note(in.cost, d.persistence), 100 * in.min_gain);
  } else if (!in.force && d.gain_seconds <= d.migrate_seconds) {
    d.reason = fmt::format("predicted gain {:.4f} s over {} steps{} does not pay for migrating {:.0f} bytes ({:.4f} s)",
                           d.gain_seconds, in.interval, expected_note(in.cost, d.persistence), d.migrate_bytes, d.migrate_seconds);
  } else if (d.home) {
    d.apply = true;
    d.reason = fmt::format("back to the static layout: on the last {} steps it beats the current placement (fitted to "
                           "loads that have since moved) and the best fitted one; predicted gain {:.4f} s{} > migration {:.4f} s",
                           in.recent_loads.size(), d.gain_seconds, expected_note(in.cost, d.persistence), d.migrate_seconds);
  } else {
    d.apply = true;
    d.reason = in.force ? "forced"
                        : fmt::format("predicted gain {:.4f} s{} > migration {:.4f} s", d.gain_seconds,
                                      expected_note(in.cost, d.persistence), d.migrate_seconds);
  }
  if (!d.apply) {
    d.placements = in.current;
    d.after = d.before;
  }
  return d;
}

}  // namespace moerun
