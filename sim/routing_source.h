// RoutingSource: where each simulated step's token-copies go, per MoE layer, source rank and
// expert. Synthetic, or replayed from a routing trace (log.routing_trace) of a real run.
//
//   uniform     every copy picks an expert uniformly (sampled, so counts vary step to step;
//               counts with a variance above 25 are drawn from the normal approximation)
//   zipf:S      expert e with probability proportional to 1 / (e + 1)^S, as bench.router_zipf
//               biases the router (expert 0 hottest; the contiguous placement then puts the
//               hot experts together); copies of one token are distinct experts, so a source
//               rank sends an expert at most one copy per token
//   balanced    every expert the same copies from every rank (bench.router_balanced)
//   trace:PATH  the trace's steps in order, cycling. Resampling when the simulated layout
//               differs: source rank r replays the trace's rank r mod R, scaled by the ratio
//               of tokens per rank; with m times the trace's experts, each traced expert's
//               copies are split over m experts at random (expert e takes traced expert
//               e / m's copies). Copies scale with tokens per rank and top_k (a top-2 trace
//               replayed for top-8 sends four times the copies, at most one per token and
//               expert). The MoE layers must match.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "checkpoint/routing_trace_file.h"
#include "sim/step_model.h"
#include "train/config.h"

namespace moerun::sim {

struct RoutingSpec {
  enum class Kind { Uniform, Zipf, Balanced, Trace } kind = Kind::Uniform;
  double zipf = 0.0;
  std::string trace;
  static RoutingSpec parse(const std::string& text);  // ConfigError listing the forms
  std::string describe() const;
};

class RoutingSource {
 public:
  RoutingSource(const RoutingSpec& spec, const Config& config, int world_size, int moe_layers, std::uint64_t seed);
  Routing next();
  void next(Routing& out);  // the same into out, whose storage is reused step to step
  std::int64_t trace_steps() const { return static_cast<std::int64_t>(trace_.step.size()); }

 private:
  RoutingSpec spec_;
  int world_, layers_;
  std::int64_t experts_, copies_per_rank_, tokens_per_rank_;
  std::vector<double> probability_;  // zipf, uniform: per expert
  std::vector<double> conditional_, log_not_;  // per expert: its chance given the experts before it, log1p(-chance)
  ckpt::RoutingTrace trace_;
  std::int64_t next_step_ = 0;
  std::mt19937_64 rng_;
  std::normal_distribution<double> normal_;
  std::uniform_real_distribution<double> uniform_;
  std::int64_t binomial(std::int64_t n, double p, double log_not);  // log_not = log1p(-p)
};

}  // namespace moerun::sim
