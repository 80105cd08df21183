#include "sim/routing_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "runtime/error.h"

namespace moerun::sim {

RoutingSpec RoutingSpec::parse(const std::string& text) {
  RoutingSpec s;
  if (text == "uniform") return s;
  if (text == "balanced") return s.kind = Kind::Balanced, s;
  if (text.starts_with("zipf:")) {
    s.kind = Kind::Zipf;
    try {
      std::size_t used = 0;
      s.zipf = std::stod(text.substr(5), &used);
      if (used != text.size() - 5 || !(s.zipf >= 0)) throw std::invalid_argument("");
    } catch (const std::exception&) {
      MOERUN_THROW(ConfigError, "routing '{}': the Zipf exponent must be a number >= 0, as in zipf:1.2", text);
    }
    return s;
  }
  if (text.starts_with("trace:") && text.size() > 6) return s.kind = Kind::Trace, s.trace = text.substr(6), s;
  MOERUN_THROW(ConfigError, "routing '{}' is not one of: uniform, balanced, zipf:S (S >= 0), trace:PATH (a routing trace "
               "written with log.routing_trace = true)", text);
}

std::string RoutingSpec::describe() const {
  switch (kind) {
    case Kind::Uniform: return "uniform";
    case Kind::Balanced: return "balanced";
    case Kind::Zipf: return fmt::format("zipf:{:g}", zipf);
    case Kind::Trace: return "trace:" + trace;
  }
  return "?";
}

RoutingSource::RoutingSource(const RoutingSpec& spec, const Config& config, int world_size, int moe_layers, std::uint64_t seed)
    : spec_(spec), world_(world_size), layers_(moe_layers), experts_(config.model.experts), rng_(seed) {
  tokens_per_rank_ = config.micro_batches_per_rank(world_size) * config.train.micro_batch * config.model.seq_len;
  copies_per_rank_ = tokens_per_rank_ * config.model.top_k;
  const double s = spec.kind == RoutingSpec::Kind::Zipf ? spec.zipf : 0.0;
  for (std::int64_t e = 0; e < experts_; ++e) probability_.push_back(1.0 / std::pow(double(e + 1), s));
  const double sum = std::accumulate(probability_.begin(), probability_.end(), 0.0);
  for (double& p : probability_) p /= sum;
  // Each expert's chance given the copies the experts before it did not take: the same for
  // every source rank, so drawn from a table (log1p(-p) costs as much as the draw).
  double p_left = 1.0;
  for (const double p : probability_) {
    conditional_.push_back(std::clamp(p / std::max(p_left, 1e-300), 0.0, 1.0));
    log_not_.push_back(std::log1p(-conditional_.back()));
    p_left -= p;
  }
  if (spec.kind != RoutingSpec::Kind::Trace) return;
  trace_ = ckpt::read_routing_trace(spec.trace);
  const auto& shape = trace_.shape;
  MOERUN_CHECK(shape.layers == moe_layers, ConfigError,
               "routing trace '{}' has {} MoE layers but the config has {}: replay a trace of the same model depth",
               spec.trace, shape.layers, moe_layers);
  MOERUN_CHECK(experts_ % shape.experts == 0, ConfigError,
               "routing trace '{}' has {} experts but the config has {}: the config's experts must be the trace's or a "
               "multiple of them (each traced expert is then split)",
               spec.trace, shape.experts, experts_);
  MOERUN_CHECK(!trace_.step.empty(), ConfigError, "routing trace '{}' holds no steps", spec.trace);
}

Routing RoutingSource::next() {
  Routing out;
  next(out);
  return out;
}

void RoutingSource::next(Routing& out) {
  const auto E = static_cast<std::size_t>(experts_);
  out.resize(static_cast<std::size_t>(layers_));
  for (auto& layer : out) {
    layer.resize(static_cast<std::size_t>(world_));
    for (auto& rank : layer) rank.assign(E, 0.0);
  }
  if (spec_.kind == RoutingSpec::Kind::Balanced) {
    for (auto& layer : out)
      for (auto& rank : layer) std::fill(rank.begin(), rank.end(), double(copies_per_rank_) / double(experts_));
    return;
  }
  if (spec_.kind == RoutingSpec::Kind::Trace) {
    const auto& shape = trace_.shape;
    const auto step = static_cast<std::size_t>(next_step_++ % trace_steps());
    // Copies per rank scale with tokens per rank and top_k (a top-2 trace replayed for top-8
    // sends four times the copies); an expert still takes at most one copy per token.
    const double traced_copies_per_rank = double(shape.tokens_per_step) / double(shape.ranks) * double(shape.top_k);
    const double scale = double(copies_per_rank_) / traced_copies_per_rank;
    const std::int64_t split = experts_ / shape.experts;
    std::vector<double> split_log_not;  // log1p(-1 / (split - c)) for the c-th draw of a split
    for (std::int64_t c = 0; c < split; ++c) split_log_not.push_back(std::log1p(-1.0 / double(split - c)));
    for (std::size_t l = 0; l < out.size(); ++l)
      for (std::size_t r = 0; r < out[l].size(); ++r) {
        const std::size_t src = r % static_cast<std::size_t>(shape.ranks);
        const std::int64_t* row = &trace_.routed[((step * static_cast<std::size_t>(shape.layers) + l) * static_cast<std::size_t>(shape.ranks) + src) *
                                                 static_cast<std::size_t>(shape.experts)];
        for (std::int64_t te = 0; te < shape.experts; ++te) {
          if (split == 1) {
            out[l][r][static_cast<std::size_t>(te)] = std::min(scale * double(row[te]), double(tokens_per_rank_));
            continue;
          }
          // Split the traced expert's copies, scaled to this layout, over its `split` experts,
          // each copy at random: the split has the noise of the simulated copy counts. (Splitting
          // the traced copies and scaling after would multiply that noise by sqrt(scale), and
          // make imbalance that no placement can follow.)
          auto left = static_cast<std::int64_t>(std::llround(scale * double(row[te])));
          for (std::int64_t c = 0; c < split; ++c) {
            const std::int64_t n = c + 1 == split ? left : binomial(left, 1.0 / double(split - c), split_log_not[static_cast<std::size_t>(c)]);
            out[l][r][static_cast<std::size_t>(te * split + c)] = std::min(double(n), double(tokens_per_rank_));
            left -= n;
          }
        }
      }
    return;
  }
  // Sampled: copies fall on experts by sequential binomials (a multinomial), at most one copy
  // of a token per expert; what a full expert cannot take goes to the others.
  for (auto& layer : out)
    for (auto& rank : layer) {
      std::int64_t left = copies_per_rank_;
      for (std::size_t e = 0; e < E && left > 0; ++e) {
        const std::int64_t n = std::min(e + 1 == E ? left : binomial(left, conditional_[e], log_not_[e]), tokens_per_rank_);
        rank[e] = double(n);
        left -= n;
      }
    }
}

std::int64_t RoutingSource::binomial(std::int64_t n, double p, double log_not) {
  // The normal approximation where it is accurate (variance above 25), exact draws below: a
  // sampled routing at EP 1024 draws millions per step, and an exact draw costs ~0.2 us.
  const double mean = double(n) * p, variance = mean * (1.0 - p);
  if (variance > 25.0) {
    const double x = std::round(mean + std::sqrt(variance) * normal_(rng_));
    return static_cast<std::int64_t>(std::clamp(x, 0.0, double(n)));
  }
  // Exact, by inverting the distribution function from 0 up (the mean is at most ~26 here).
  if (n <= 0 || p <= 0.0) return 0;
  if (p >= 1.0) return n;
  const double u = uniform_(rng_), ratio = p / (1.0 - p);
  double pmf = std::exp(double(n) * log_not), cdf = pmf;
  std::int64_t k = 0;
  while (u > cdf && k < n) {
    pmf *= double(n - k) / double(k + 1) * ratio;
    cdf += pmf;
    ++k;
    if (pmf < 1e-300 && double(k) > mean) break;  // the rest of the tail is below rounding
  }
  return k;
}

}  // namespace moerun::sim
