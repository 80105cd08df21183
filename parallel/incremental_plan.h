// Incremental placement: the current placement changed one replica at a time, each change the
// one that lowers the busiest rank's expert load most per expert state it moves. The changes:
//   add      a replica of one of the busiest rank's experts on a rank with a free slot;
//   move     one of the busiest rank's replicas to a rank with a free slot;
//   swap     one of the busiest rank's replicas with another rank's (two states move);
//   replace  on another rank, a replica of an expert that has others gives its slot to a
//            replica of one of the busiest rank's experts (a slot held by a formerly hot
//            expert is reused when loads drift).
// A change is taken only when every rank it touches ends below the busiest rank's load, so the
// busiest load never rises; the walk stops when no change lowers it.
//
// Why: re-packing every expert reaches a good balance but moves nearly all expert state, which
// at scale costs several steps' time (moerun-sim: 10 steps' worth at EP 64), while a few
// changes around the current placement usually reach most of the gain. The walk returns
// snapshots after 1, 2, 3, ... changes (geometrically spaced past the first few, and always
// the last) so the planner can stop where the next changes no longer pay for their bytes.
#pragma once

#include <vector>

#include "parallel/placement.h"

namespace moerun {

struct IncrementalStep {
  Placement placement;
  int states_moved = 0;  // expert states that move from the starting placement to this one
};

// loads[e]: token-copies of expert e per step; slots: expert slots per rank (replicas
// included). Snapshots in order of growing change; empty when no change lowers the busiest rank.
std::vector<IncrementalStep> incremental_placements(const std::vector<double>& loads, const Placement& current, int slots);

}  // namespace moerun
