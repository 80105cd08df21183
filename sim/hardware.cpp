#include "sim/hardware.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "runtime/error.h"

namespace moerun::sim {
namespace {

// Position of x on a sorted grid in log space: the lower index and the weight of the upper one.
std::pair<std::size_t, double> locate(const std::vector<double>& grid, double x) {
  if (grid.size() == 1 || x <= grid.front()) return {0, 0.0};
  if (x >= grid.back()) return {grid.size() - 2, 1.0};
  std::size_t i = 0;
  while (grid[i + 1] < x) ++i;
  return {i, (std::log(x) - std::log(grid[i])) / (std::log(grid[i + 1]) - std::log(grid[i]))};
}

class Reader {
 public:
  Reader(const toml::table& root, std::string path) : root_(root), path_(std::move(path)) {}

  const toml::node* find(const std::string& key) const { return root_.at_path(key).node(); }
  double number(const std::string& key, const std::string& meaning, double min = 0.0) const {
    const toml::node* n = find(key);
    MOERUN_CHECK(n != nullptr, ConfigError, "hardware file '{}': field {} is missing ({})", path_, key, meaning);
    const std::optional<double> v = n->value<double>();
    MOERUN_CHECK(v.has_value() && std::isfinite(*v), ConfigError, "hardware file '{}': field {} must be a number ({})",
                 path_, key, meaning);
    MOERUN_CHECK(*v >= min, ConfigError, "hardware file '{}': field {} = {} must be >= {} ({})", path_, key, *v, min, meaning);
    return *v;
  }
  std::string text(const std::string& key, const std::string& meaning) const {
    const toml::node* n = find(key);
    MOERUN_CHECK(n != nullptr && n->is_string(), ConfigError, "hardware file '{}': field {} is missing or not a string ({})",
                 path_, key, meaning);
    return *n->value<std::string>();
  }
  std::vector<double> numbers(const std::string& key) const {
    const toml::array* a = root_.at_path(key).as_array();
    MOERUN_CHECK(a != nullptr && !a->empty(), ConfigError, "hardware file '{}': field {} must be a non-empty array of numbers",
                 path_, key);
    std::vector<double> out;
    for (const toml::node& n : *a) {
      const std::optional<double> v = n.value<double>();
      MOERUN_CHECK(v.has_value() && *v > 0, ConfigError, "hardware file '{}': field {} holds {}, not a positive number", path_,
                   key, n.is_string() ? *n.value<std::string>() : "a non-number");
      out.push_back(*v);
    }
    return out;
  }
  RateTable table(const std::string& key, bool three_axes) const {
    RateTable t;
    t.rows = numbers(key + ".rows");
    if (three_axes) t.cols = numbers(key + ".cols"), t.inner = numbers(key + ".inner");
    t.gflops = numbers(key + ".gflops");
    const std::size_t cells = t.rows.size() * (three_axes ? t.cols.size() * t.inner.size() : 1);
    MOERUN_CHECK(t.gflops.size() == cells, ConfigError, "hardware file '{}': field {}.gflops has {} values, the grid {} cells",
                 path_, key, t.gflops.size(), cells);
    for (const auto* axis : {&t.rows, &t.cols, &t.inner})
      MOERUN_CHECK(std::is_sorted(axis->begin(), axis->end()), ConfigError, "hardware file '{}': the axes of {} must ascend",
                   path_, key);
    return t;
  }
  PeakRate peak(const std::string& key) const {
    const PeakRate rate{.tflops = number(key + ".tflops", "peak TFLOP/s of the specification", 1e-9),
                        .efficiency = number(key + ".efficiency", "share of the peak reached on large shapes, (0, 1]", 1e-9),
                        .half_rows = number(key + ".half_rows", "rows at which a GEMM reaches half its large-shape rate")};
    MOERUN_CHECK(rate.efficiency <= 1.0, ConfigError, "hardware file '{}': field {}.efficiency = {} must be <= 1", path_, key,
                 rate.efficiency);
    return rate;
  }
  LinkFit fit(const std::string& key) const {
    return {.alpha_us = number(key + ".alpha_us", "latency of one collective, microseconds"),
            .gbps = number(key + ".gbps", "bandwidth, GB/s", 1e-9)};
  }
  Link link(const std::string& key) const { return {.all_to_all = fit(key + ".all_to_all"), .all_reduce = fit(key + ".all_reduce")}; }

 private:
  const toml::table& root_;
  std::string path_;
};

std::string join(const std::vector<double>& v) { return fmt::format("[{}]", fmt::join(v, ", ")); }

void write_table(std::ofstream& out, const std::string& key, const RateTable& t) {
  if (t.empty()) return;
  out << fmt::format("\n[{}]\nrows = {}\n", key, join(t.rows));
  if (!t.cols.empty()) out << fmt::format("cols = {}\ninner = {}\n", join(t.cols), join(t.inner));
  std::vector<double> rounded;
  for (double g : t.gflops) rounded.push_back(std::round(g * 100) / 100);
  out << fmt::format("gflops = {}\n", join(rounded));
}

}  // namespace

double RateTable::at(double m, double n, double k) const {
  if (cols.empty()) {
    const auto [i, w] = locate(rows, m);
    const double lo = std::log(gflops[i]), hi = std::log(gflops[std::min(i + 1, gflops.size() - 1)]);
    return std::exp(lo + w * (hi - lo));
  }
  const auto [i, wi] = locate(rows, m);
  const auto [j, wj] = locate(cols, n);
  const auto [l, wl] = locate(inner, k);
  const std::size_t nj = cols.size(), nl = inner.size();
  double log_rate = 0.0;
  for (int di = 0; di < 2; ++di)
    for (int dj = 0; dj < 2; ++dj)
      for (int dl = 0; dl < 2; ++dl) {
        const double w = (di ? wi : 1 - wi) * (dj ? wj : 1 - wj) * (dl ? wl : 1 - wl);
        if (w == 0.0) continue;
        const std::size_t a = std::min(i + di, rows.size() - 1), b = std::min(j + dj, nj - 1), c = std::min(l + dl, nl - 1);
        log_rate += w * std::log(gflops[(a * nj + b) * nl + c]);
      }
  return std::exp(log_rate);
}

double attention_flops(double batch, double seq, double heads, double head_dim, bool backward) {
  return (backward ? 2.0 : 1.0) * 4.0 * batch * heads * seq * seq * head_dim;
}

const RateTable& GemmTables::of(GemmRole role) const {
  return role == GemmRole::Forward ? forward : role == GemmRole::DataGrad ? data_grad : weight_grad;
}

double Hardware::gemm_seconds(DType dtype, double m, double n, double k, GemmRole role) const {
  if (m <= 0 || n <= 0 || k <= 0) return 0.0;
  const bool bf16 = dtype == DType::BF16;
  const GemmTables& t = bf16 ? gemm_bf16 : gemm_f32;
  // The specification's rate is for the GEMM's smallest dimension (the tokens, whichever role).
  const double gflops = t.empty() ? (bf16 ? gemm_peak_bf16 : gemm_peak_f32).gflops(std::min({m, n, k}))
                                  : t.of(role).at(m, n, k);
  return 2.0 * m * n * k / (1e9 * gflops) + 1e-6 * kernel_overhead_us;
}

double Hardware::attention_seconds(DType dtype, double batch, double seq, double heads, double head_dim, bool backward) const {
  const bool bf16 = dtype == DType::BF16;
  const RateTable& t = bf16 ? attention_bf16 : attention_f32;
  const double gflops = t.empty() ? (bf16 ? attention_peak_bf16 : attention_peak_f32).gflops(batch * seq) : t.at(seq);
  return attention_flops(batch, seq, heads, head_dim, backward) / (1e9 * gflops) + 1e-6 * kernel_overhead_us;
}

Hardware load_hardware(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    MOERUN_THROW(ConfigError, "hardware file '{}' cannot be read: {} (line {})", path, e.description(),
                 e.source().begin.line);
  }
  const Reader r(root, path);
  Hardware hw;
  hw.path = path;
  hw.name = r.text("hardware.name", "what the machine is");
  hw.source = r.text("hardware.source", "\"measured\" or \"specification\"");
  MOERUN_CHECK(hw.source == "measured" || hw.source == "specification", ConfigError,
               "hardware file '{}': field hardware.source = \"{}\" must be \"measured\" or \"specification\"", path, hw.source);
  if (const toml::node* d = r.find("hardware.description"); d != nullptr && d->is_string()) hw.description = *d->value<std::string>();
  hw.ranks_per_node = static_cast<int>(r.number("hardware.ranks_per_node", "accelerators (ranks) per node", 1));
  hw.kernel_overhead_us = r.number("compute.kernel_overhead_us", "fixed cost of one kernel call, microseconds");
  hw.elementwise_gbps = r.number("compute.elementwise_gbps", "memory-bound kernels, GB/s", 1e-9);
  hw.optimizer_gbps = r.number("compute.optimizer_gbps", "AdamW update, GB/s", 1e-9);
  const bool tables = r.find("compute.gemm.f32") != nullptr;
  if (tables) {
    for (const auto& [dtype, tables] : {std::pair{"f32", &hw.gemm_f32}, std::pair{"bf16", &hw.gemm_bf16}}) {
      tables->forward = r.table(fmt::format("compute.gemm.{}", dtype), true);
      tables->data_grad = r.table(fmt::format("compute.gemm_data_grad.{}", dtype), true);
      tables->weight_grad = r.table(fmt::format("compute.gemm_weight_grad.{}", dtype), true);
    }
    hw.attention_f32 = r.table("compute.attention.f32", false);
    hw.attention_bf16 = r.table("compute.attention.bf16", false);
  } else {
    hw.gemm_peak_f32 = r.peak("compute.gemm_peak.f32");
    hw.gemm_peak_bf16 = r.peak("compute.gemm_peak.bf16");
    hw.attention_peak_f32 = r.peak("compute.attention_peak.f32");
    hw.attention_peak_bf16 = r.peak("compute.attention_peak.bf16");
  }
  hw.intra_node = r.link("links.intra_node");
  hw.inter_node = r.link("links.inter_node");
  hw.allreduce_hidden = r.number("overlap.allreduce_hidden", "share of the gradient all-reduce hidden behind backward, [0, 1]");
  MOERUN_CHECK(hw.allreduce_hidden <= 1.0, ConfigError, "hardware file '{}': field overlap.allreduce_hidden = {} must be <= 1",
               path, hw.allreduce_hidden);
  return hw;
}

void save_hardware(const Hardware& hw, const std::string& path) {
  std::ofstream out(path);
  MOERUN_CHECK(out.good(), ConfigError, "cannot write the hardware file '{}'", path);
  out << fmt::format("# Written by moerun-sim calibrate: rates measured through the device and MPI on this machine.\n"
                     "[hardware]\nname = \"{}\"\nsource = \"{}\"\ndescription = \"{}\"\nranks_per_node = {}\n\n"
                     "[compute]\nkernel_overhead_us = {:.3f}\nelementwise_gbps = {:.3f}\noptimizer_gbps = {:.3f}\n",
                     hw.name, hw.source, hw.description, hw.ranks_per_node, hw.kernel_overhead_us, hw.elementwise_gbps,
                     hw.optimizer_gbps);
  for (const auto& [dtype, tables] : {std::pair{"f32", &hw.gemm_f32}, std::pair{"bf16", &hw.gemm_bf16}}) {
    write_table(out, fmt::format("compute.gemm.{}", dtype), tables->forward);
    write_table(out, fmt::format("compute.gemm_data_grad.{}", dtype), tables->data_grad);
    write_table(out, fmt::format("compute.gemm_weight_grad.{}", dtype), tables->weight_grad);
  }
  write_table(out, "compute.attention.f32", hw.attention_f32);
  write_table(out, "compute.attention.bf16", hw.attention_bf16);
  for (const auto& [key, link] : {std::pair{"intra_node", hw.intra_node}, std::pair{"inter_node", hw.inter_node}})
    out << fmt::format("\n[links.{0}.all_to_all]\nalpha_us = {1:.3f}\ngbps = {2:.4f}\n\n[links.{0}.all_reduce]\nalpha_us = {3:.3f}\n"
                       "gbps = {4:.4f}\n",
                       key, link.all_to_all.alpha_us, link.all_to_all.gbps, link.all_reduce.alpha_us, link.all_reduce.gbps);
  out << fmt::format("\n[overlap]\nallreduce_hidden = {:.3f}\n", hw.allreduce_hidden);
  MOERUN_CHECK(out.good(), ConfigError, "could not finish writing the hardware file '{}'", path);
}

}  // namespace moerun::sim
