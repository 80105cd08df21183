#include "parallel/incremental_plan.h"

#include <algorithm>
#include <cstddef>

namespace moerun {

namespace {

enum class ChangeKind { Add, Move, Swap, Replace };

struct Change {
  ChangeKind kind = ChangeKind::Add;
  int expert = -1;  // one of the busiest rank's experts
  int to = -1;      // the rank that receives it
  int other = -1;   // swap: the expert that comes back; replace: the expert whose slot is taken
  int states = 1;   // expert states moved
  double worst = 0.0;  // the highest load among the ranks the change touches, after it
};

// Rank loads with equal replica shares: each of an expert's R replicas processes load / R
// (expected_rank_loads with share 1 everywhere, which is what the planner's placements use).
class Walk {
 public:
  Walk(const std::vector<double>& loads, const Placement& current, int slots)
      : loads_(loads), ep_(current.ep_size()), slots_(slots), holders_(loads.size()), held_(static_cast<std::size_t>(ep_)),
        load_(static_cast<std::size_t>(ep_), 0.0) {
    for (int e = 0; e < current.experts(); ++e)
      for (const Replica& r : current.replicas(e)) {
        holders_[static_cast<std::size_t>(e)].push_back(r.rank);
        held_[static_cast<std::size_t>(r.rank)].push_back(e);
      }
    for (int e = 0; e < current.experts(); ++e)
      for (int r : holders_[static_cast<std::size_t>(e)]) load_[static_cast<std::size_t>(r)] += per_replica(e);
  }

  // The change that lowers the busiest rank most per state moved; false when none lowers it.
  bool best_change(Change& best) const {
    const int b = busiest();
    const double top = load(b), eps = 1e-12 + 1e-9 * top;
    double best_score = 0.0;
    bool found = false;
    auto consider = [&](const Change& c) {
      if (c.worst >= top - eps) return;
      const double score = (top - c.worst) / c.states;
      if (!found || score > best_score + eps) best = c, best_score = score, found = true;
    };
    for (int e : held_[static_cast<std::size_t>(b)]) {
      const double R = double(replicas(e)), mine = per_replica(e), shared = loads_[static_cast<std::size_t>(e)] / (R + 1);
      const bool can_add = replicas(e) < ep_;
      for (int c = 0; c < ep_; ++c) {
        if (c == b || holds(c, e)) continue;
        const bool free = int(held_[static_cast<std::size_t>(c)].size()) < slots_;
        if (free && can_add)
          consider({ChangeKind::Add, e, c, -1, 1, std::max(load(b) - (mine - shared), load(c) + shared)});
        if (free) consider({ChangeKind::Move, e, c, -1, 1, std::max(load(b) - mine, load(c) + mine)});
        for (int f : held_[static_cast<std::size_t>(c)]) {
          const double theirs = per_replica(f);
          if (!holds(b, f))
            consider({ChangeKind::Swap, e, c, f, 2, std::max(load(b) - mine + theirs, load(c) - theirs + mine)});
          if (can_add && replicas(f) >= 2) {
            // f's other replicas take over the copies its replica on c processed.
            const double rises = loads_[static_cast<std::size_t>(f)] / double(replicas(f) - 1) - theirs;
            double worst = std::max(load(b) - (mine - shared), load(c) - theirs + shared);
            for (int h : holders_[static_cast<std::size_t>(f)])
              if (h != c) worst = std::max(worst, load(h) + rises - (h == b ? mine - shared : 0.0));
            consider({ChangeKind::Replace, e, c, f, 1, worst});
          }
        }
      }
    }
    return found;
  }

  void apply(const Change& c) {
    const int b = busiest();
    switch (c.kind) {
      case ChangeKind::Add: add(c.expert, c.to); break;
      case ChangeKind::Move: remove(c.expert, b), add(c.expert, c.to); break;
      case ChangeKind::Swap: remove(c.expert, b), remove(c.other, c.to), add(c.expert, c.to), add(c.other, b); break;
      case ChangeKind::Replace: remove(c.other, c.to), add(c.expert, c.to); break;
    }
  }

  Placement placement() const {
    std::vector<std::vector<Replica>> replicas(holders_.size());
    for (std::size_t e = 0; e < holders_.size(); ++e) {
      std::vector<int> ranks = holders_[e];
      std::sort(ranks.begin(), ranks.end());
      for (int r : ranks) replicas[e].push_back({r, 1});
    }
    return Placement(ep_, std::move(replicas));
  }

 private:
  int busiest() const { return static_cast<int>(std::max_element(load_.begin(), load_.end()) - load_.begin()); }
  double load(int r) const { return load_[static_cast<std::size_t>(r)]; }
  int replicas(int e) const { return static_cast<int>(holders_[static_cast<std::size_t>(e)].size()); }
  double per_replica(int e) const { return loads_[static_cast<std::size_t>(e)] / double(replicas(e)); }
  bool holds(int r, int e) const {
    const auto& h = holders_[static_cast<std::size_t>(e)];
    return std::find(h.begin(), h.end(), r) != h.end();
  }
  // Adding or removing a replica changes the share of every replica of that expert.
  void spread(int e, double sign) {
    for (int r : holders_[static_cast<std::size_t>(e)]) load_[static_cast<std::size_t>(r)] += sign * per_replica(e);
  }
  void add(int e, int r) {
    spread(e, -1.0);
    holders_[static_cast<std::size_t>(e)].push_back(r);
    held_[static_cast<std::size_t>(r)].push_back(e);
    spread(e, +1.0);
  }
  void remove(int e, int r) {
    spread(e, -1.0);
    auto& h = holders_[static_cast<std::size_t>(e)];
    h.erase(std::find(h.begin(), h.end(), r));
    auto& mine = held_[static_cast<std::size_t>(r)];
    mine.erase(std::find(mine.begin(), mine.end(), e));
    spread(e, +1.0);
  }

  const std::vector<double>& loads_;
  int ep_, slots_;
  std::vector<std::vector<int>> holders_;  // [expert] ranks with a replica, in the order they got it
  std::vector<std::vector<int>> held_;     // [rank] experts it holds
  std::vector<double> load_;               // [rank] copies it processes per step
};

}  // namespace

std::vector<IncrementalStep> incremental_placements(const std::vector<double>& loads, const Placement& current, int slots) {
  Walk walk(loads, current, std::max(slots, current.max_slots_used()));
  std::vector<IncrementalStep> steps;
  // Every change strictly lowers the busiest rank and leaves the ranks it touches below it, so
  // the walk ends; the bound only caps its cost.
  const int limit = 2 * current.ep_size() * std::max(slots, 1) + 64;
  int taken = 0, next_snapshot = 1, saved_at = 0;
  auto snapshot = [&] {
    Placement p = walk.placement();
    const int moved = p.replicas_added_since(current);
    steps.push_back({std::move(p), moved});
    saved_at = taken;
  };
  Change change;
  while (taken < limit && walk.best_change(change)) {
    walk.apply(change);
    if (++taken == next_snapshot) {
      snapshot();
      next_snapshot = taken < 8 ? taken + 1 : taken + std::max(1, taken / 4);
    }
  }
  if (taken > saved_at) snapshot();  // always the walk's end
  return steps;
}

}  // namespace moerun
