// What a collective costs: measured on a group (the median time of a few runs, every rank
// starting together) and on the wire (the bytes a ring all-reduce puts there). Used by the
// planner's cost model, training's start-up measurements and moerun-sim's calibration alike.
#pragma once

#include <functional>

#include "parallel/process_group.h"

namespace moerun {

// This rank's median seconds over `runs` calls of `collective` on `group`, each after a
// barrier. Ranks differ: callers agree on one number (the slowest rank's, usually).
double median_collective_seconds(ProcessGroup& group, int runs, const std::function<void()>& collective);

// Bytes each of p ranks sends in a ring all-reduce of `payload` bytes: 2 (p - 1) / p of it.
inline double ring_all_reduce_wire_bytes(double payload, int p) { return p > 1 ? 2.0 * (p - 1) / p * payload : 0.0; }

}  // namespace moerun
