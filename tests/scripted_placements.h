// The placements the adaptive and static-shape tests force every 2 steps, for 8 experts over
// ep ranks: every expert moved to the next rank (step 2), expert 0 replicated on every rank with
// uneven shares (4), back to contiguous (6), two replicas of expert 3 beside a lone expert 1 on
// the last rank (8). Nothing at other steps.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "parallel/placement.h"

namespace moerun::test {

inline constexpr int kScriptedExperts = 8;

// `current`: the trainer's placements now (one per MoE layer); the result has as many.
inline std::optional<std::vector<Placement>> scripted_placements(std::int64_t step, const std::vector<Placement>& current,
                                                                 int ep) {
  constexpr int n = kScriptedExperts;
  std::vector<std::vector<Replica>> reps(n);
  if (step == 2) {  // rotate: every expert to the next rank
    for (int e = 0; e < n; ++e) reps[static_cast<std::size_t>(e)] = {{(e / (n / ep) + 1) % ep, 1}};
  } else if (step == 4) {  // expert 0 on every rank, with uneven shares; the rest as before
    for (int r = 0; r < ep; ++r) reps[0].push_back({r, r + 1});
    for (int e = 1; e < n; ++e) reps[static_cast<std::size_t>(e)] = {current[0].replicas(e)[0]};
  } else if (step == 6) {  // back to static, dropping the replicas
    return std::vector<Placement>(current.size(), Placement::contiguous(n, ep));
  } else if (step == 8) {  // two replicas of expert 3, expert 1 alone on the last rank
    for (int e = 0; e < n; ++e) reps[static_cast<std::size_t>(e)] = {{e % ep, 1}};
    reps[3] = {{0, 1}, {ep - 1, 2}};
    reps[1] = {{ep - 1, 1}};
  } else {
    return std::nullopt;
  }
  return std::vector<Placement>(current.size(), Placement(ep, reps));
}

}  // namespace moerun::test
