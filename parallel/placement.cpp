#include "parallel/placement.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <numeric>

#include "runtime/error.h"

namespace moerun {

Placement::Placement(int ep_size, std::vector<std::vector<Replica>> replicas)
    : ep_size_(ep_size), replicas_(std::move(replicas)) {
  for (std::size_t e = 0; e < replicas_.size(); ++e) {
    auto& reps = replicas_[e];
    MOERUN_CHECK(!reps.empty(), RuntimeError, "[placement] expert {} has no replica", e);
    std::sort(reps.begin(), reps.end(), [](const Replica& a, const Replica& b) { return a.rank < b.rank; });
    for (std::size_t i = 0; i < reps.size(); ++i) {
      MOERUN_CHECK(reps[i].rank >= 0 && reps[i].rank < ep_size_, RuntimeError,
                   "[placement] expert {} placed on ep_rank {}, outside [0, {})", e, reps[i].rank, ep_size_);
      MOERUN_CHECK(reps[i].share >= 1, RuntimeError, "[placement] expert {} replica on rank {} has share {} < 1", e,
                   reps[i].rank, reps[i].share);
      MOERUN_CHECK(i == 0 || reps[i].rank != reps[i - 1].rank, RuntimeError,
                   "[placement] expert {} has two replicas on ep_rank {}", e, reps[i].rank);
    }
  }
}

Placement Placement::contiguous(int experts, int ep_size) {
  std::vector<std::vector<Replica>> replicas(static_cast<std::size_t>(experts));
  const int per_rank = experts / ep_size;
  for (int e = 0; e < experts; ++e) replicas[static_cast<std::size_t>(e)] = {{e / per_rank, 1}};
  return Placement(ep_size, std::move(replicas));
}

bool Placement::holds(int rank, int expert) const {
  for (const Replica& r : replicas(expert))
    if (r.rank == rank) return true;
  return false;
}

std::vector<int> Placement::local_experts(int ep_rank) const {
  std::vector<int> out;
  for (int e = 0; e < experts(); ++e)
    if (holds(ep_rank, e)) out.push_back(e);
  return out;
}

std::vector<int> Placement::slots_used_per_rank() const {
  std::vector<int> used(static_cast<std::size_t>(ep_size_), 0);
  for (const auto& reps : replicas_)
    for (const Replica& r : reps) ++used[static_cast<std::size_t>(r.rank)];
  return used;
}

int Placement::max_slots_used() const {
  const std::vector<int> used = slots_used_per_rank();
  return *std::max_element(used.begin(), used.end());
}

std::vector<std::int64_t> Placement::split(int expert, int source, std::int64_t rows) const {
  std::vector<std::int64_t> out(static_cast<std::size_t>(ep_size_), 0);
  const auto& reps = replicas(expert);
  if (holds(source, expert)) {
    out[static_cast<std::size_t>(source)] = rows;
    return out;
  }
  std::int64_t total = 0;
  for (const Replica& r : reps) total += r.share;
  std::int64_t cumulative = 0, given = 0;
  for (const Replica& r : reps) {
    cumulative += r.share;
    const std::int64_t upto = rows * cumulative / total;
    out[static_cast<std::size_t>(r.rank)] = upto - given;
    given = upto;
  }
  return out;
}

bool Placement::rank_contiguous() const {
  for (std::size_t e = 0; e < replicas_.size(); ++e) {
    if (replicas_[e].size() != 1) return false;
    if (e > 0 && replicas_[e][0].rank < replicas_[e - 1][0].rank) return false;
  }
  return true;
}

bool Placement::operator==(const Placement& o) const {
  if (ep_size_ != o.ep_size_ || replicas_.size() != o.replicas_.size()) return false;
  for (std::size_t e = 0; e < replicas_.size(); ++e) {
    if (replicas_[e].size() != o.replicas_[e].size()) return false;
    for (std::size_t i = 0; i < replicas_[e].size(); ++i)
      if (replicas_[e][i].rank != o.replicas_[e][i].rank || replicas_[e][i].share != o.replicas_[e][i].share) return false;
  }
  return true;
}

std::string Placement::describe() const {
  std::vector<std::string> parts;
  for (int e = 0; e < experts(); ++e) {
    std::vector<int> ranks;
    for (const Replica& r : replicas(e)) ranks.push_back(r.rank);
    parts.push_back(fmt::format("{}:[{}]", e, fmt::join(ranks, ",")));
  }
  return fmt::format("{}", fmt::join(parts, " "));
}

nlohmann::json Placement::to_json() const {
  nlohmann::json j = nlohmann::json::array();
  for (int e = 0; e < experts(); ++e) {
    nlohmann::json reps = nlohmann::json::array();
    for (const Replica& r : replicas(e)) reps.push_back({{"rank", r.rank}, {"share", r.share}});
    j.push_back(reps);
  }
  return j;
}

Placement Placement::from_json(int ep_size, const nlohmann::json& j) {
  MOERUN_CHECK(j.is_array(), RuntimeError, "[placement] expected an array of experts, got {}", j.dump());
  std::vector<std::vector<Replica>> replicas;
  for (const auto& expert : j) {
    replicas.emplace_back();
    for (const auto& r : expert) replicas.back().push_back({r.at("rank").get<int>(), r.at("share").get<std::int64_t>()});
  }
  return Placement(ep_size, std::move(replicas));
}

int Placement::replicas_added_since(const Placement& before) const {
  int added = 0;
  for (int e = 0; e < experts(); ++e)
    for (const Replica& r : replicas(e)) added += before.holds(r.rank, e) ? 0 : 1;
  return added;
}

}  // namespace moerun
