// moerun-ckpt: look inside moerun checkpoints. A plain serial program (no mpirun).
//   moerun-ckpt info FILE            step, config summary, layout, sizes
//   moerun-ckpt ls FILE              every tensor: name, shape, dtype, bytes
//   moerun-ckpt show FILE TENSOR     min, max, mean, std, L2 norm, NaN/Inf count [--values N]; an expert's
//                                    parameter name (layers.1.moe.experts.3.w1) shows that expert alone
//   moerun-ckpt stats FILE           per tensor (parameters and AdamW moments) L2, std, max|x|, NaN/Inf;
//                                    per expert L2, max|x| and NaN/Inf; router column norms
//   moerun-ckpt placement FILE       expert -> ranks per layer, and the load history
//   moerun-ckpt diff A B             per tensor and per expert |A-B|/|A| (sorted), max abs / rel difference,
//                                    the config keys that differ; exit 1 beyond --rtol/--atol
//   moerun-ckpt verify FILE          checksums and structure; exit 1 on any failure
// --json on every command prints one JSON document instead of text. FILE may be a directory
// (its latest checkpoint).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/format.h"

using Json = nlohmann::json;
using namespace moerun;
using namespace moerun::ckpt;

namespace {

struct Stats {
  double min = INFINITY, max = -INFINITY, mean = 0, std = 0, l2 = 0;
  std::int64_t count = 0, nan = 0, inf = 0;
};

Stats stats_of(const float* v, std::size_t n) {
  Stats s;
  double sum = 0, sq = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = v[i];
    if (std::isnan(x)) {
      ++s.nan;
      continue;
    }
    if (std::isinf(x)) {
      ++s.inf;
      continue;
    }
    s.min = std::min(s.min, x);
    s.max = std::max(s.max, x);
    sum += x;
    sq += x * x;
    ++s.count;
  }
  if (s.count > 0) {
    s.mean = sum / double(s.count);
    s.std = std::sqrt(std::max(0.0, sq / double(s.count) - s.mean * s.mean));
  }
  s.l2 = std::sqrt(sq);
  return s;
}

Json to_json(const Stats& s) {
  return {{"min", s.count ? s.min : 0.0}, {"max", s.count ? s.max : 0.0}, {"mean", s.mean}, {"std", s.std},
          {"l2", s.l2}, {"count", s.count}, {"nan", s.nan}, {"inf", s.inf}};
}

std::int64_t numel(const Shape& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

void print(bool json, const Json& j, const std::string& text) {
  if (json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::fputs(text.c_str(), stdout);
  }
}

// The stored config as TOML that `moerun --config` reads: one table per section. A JSON
// number, boolean, string or array of strings is a TOML value as it is written.
std::string config_toml(const Json& config) {
  std::string out;
  for (const auto& [section, keys] : config.items()) {
    out += fmt::format("[{}]\n", section);
    for (const auto& [key, value] : keys.items()) out += fmt::format("{} = {}\n", key, value.dump());
    out += "\n";
  }
  return out;
}

int cmd_config(const CheckpointReader& f, bool json) {
  const Json config = Json::parse(f.string_attribute("config"));
  if (json) {
    std::printf("%s\n", config.dump(2).c_str());
  } else {
    std::printf("# the resolved config of %s (step %lld); `moerun --config` reads it\n%s", f.path().c_str(),
                static_cast<long long>(f.int_attribute("step")), config_toml(config).c_str());
  }
  return 0;
}

int cmd_info(const CheckpointReader& f, bool json) {
  const Json config = Json::parse(f.string_attribute("config"));
  std::int64_t params = 0, bytes = 0;
  std::size_t tensors = 0;
  for (const auto& d : f.datasets()) {
    if (d.path.rfind(std::string(root_path(Root::Model)) + "/", 0) == 0) params += numel(d.shape);
    bytes += numel(d.shape) * 4;
    ++tensors;
  }
  Json j{{"file", f.path()}, {"format", f.string_attribute("format")}, {"format_version", f.int_attribute("format_version")},
         {"step", f.int_attribute("step")}, {"tokens_seen", f.int_attribute("tokens_seen")},
         {"world_size", f.int_attribute("world_size")}, {"dp", f.int_attribute("dp")}, {"ep", f.int_attribute("ep")},
         {"rebalances", f.int_attribute("rebalances")}, {"parameters", params}, {"tensors", tensors},
         {"tensor_bytes", bytes}, {"file_bytes", std::filesystem::file_size(f.path())}, {"config", config}};
  const auto& m = config["model"];
  std::string text = fmt::format(
      "{}\n  format {} v{}, step {}, {} tokens seen\n  written by {} rank(s): dp {} x ep {}, {} rebalance(s)\n"
      "  model: d_model {}, {} layers, {} heads, seq {}, {} experts top-{}, d_ff {}, {} experts, capacity {}\n"
      "  {} parameters in {} tensors (model + AdamW moments: {:.1f} MB; file {:.1f} MB)\n",
      f.path(), f.string_attribute("format"), f.int_attribute("format_version"), f.int_attribute("step"),
      f.int_attribute("tokens_seen"), f.int_attribute("world_size"), f.int_attribute("dp"), f.int_attribute("ep"),
      f.int_attribute("rebalances"), m["d_model"].dump(), m["n_layers"].dump(), m["n_heads"].dump(), m["seq_len"].dump(),
      m["experts"].dump(), m["top_k"].dump(), m["d_ff"].dump(), m["expert_type"].get<std::string>(),
      m["capacity_factor"].dump(), params, tensors, double(bytes) / 1e6,
      double(std::filesystem::file_size(f.path())) / 1e6);
  if (f.has_attribute("moerun_version")) {
    j["moerun_version"] = f.string_attribute("moerun_version");
    text += fmt::format("  written by {}\n", f.string_attribute("moerun_version"));
  }
  if (f.has_attribute("step_metrics")) {  // the numbers of the step the checkpoint follows
    const Json m = Json::parse(f.string_attribute("step_metrics"));
    j["step_metrics"] = m;
    text += fmt::format("  at step {}: loss {:.6g}, aux {:.3g}, z {:.3g}, lr {:.4g}, grad norm {:.4g}, dropped {:.2f}%{}\n",
                        f.int_attribute("step"), m.value("loss", 0.0), m.value("aux_loss", 0.0), m.value("z_loss", 0.0),
                        m.value("lr", 0.0), m.value("grad_norm", 0.0), 100.0 * m.value("dropped_frac", 0.0),
                        m.value("update_skipped", false) ? " (update skipped by the loss guard)" : "");
  }
  text += "  config (moerun-ckpt config FILE > run.toml writes it as TOML; --resume starts from it):\n";
  for (const auto& [section, keys] : config.items())
    for (const auto& [key, value] : keys.items()) text += fmt::format("    {}.{} = {}\n", section, key, value.dump());
  print(json, j, text);
  return 0;
}

int cmd_ls(const CheckpointReader& f, bool json) {
  Json j = Json::array();
  std::string text;
  for (const auto& d : f.datasets()) {
    j.push_back({{"name", d.path}, {"shape", d.shape}, {"dtype", "f32"}, {"bytes", numel(d.shape) * 4}});
    text += fmt::format("{:<56} {:<20} f32 {:>12}\n", d.path, shape_string(d.shape), numel(d.shape) * 4);
  }
  print(json, j, text);
  return 0;
}

// A dataset path, or a parameter name; an expert's parameter name selects its row of the
// stacked dataset ("layers.1.moe.experts.3.w1": row 3 of /model/layers/1/moe/experts/w1).
DatasetRef resolve_tensor(const CheckpointReader& f, const std::string& name) {
  if (f.has(name)) return {name, std::nullopt};
  for (const Root root : kRoots) {  // also accept parameter names
    const DatasetRef ref = dataset_for(root, name);
    if (f.has(ref.path)) return ref;
  }
  throw CheckpointError(fmt::format("no tensor '{}' in {}; `moerun-ckpt ls` lists them", name, f.path()), __FILE__, __LINE__);
}

int cmd_show(const CheckpointReader& f, const std::string& tensor, std::int64_t values, bool json) {
  const DatasetRef ref = resolve_tensor(f, tensor);
  Shape shape = f.shape(ref.path);
  if (ref.expert_row) shape.erase(shape.begin());  // one expert's tensor
  const auto v = ref.expert_row ? f.read_row(ref.path, *ref.expert_row) : f.read(ref.path);
  const Stats s = stats_of(v.data(), v.size());
  const std::string name = ref.expert_row ? fmt::format("{} (expert {})", ref.path, *ref.expert_row) : ref.path;
  Json j{{"name", ref.path}, {"shape", shape}, {"stats", to_json(s)}};
  if (ref.expert_row) j["expert"] = *ref.expert_row;
  std::string text = fmt::format("{} {}\n  min {:.6g}  max {:.6g}  mean {:.6g}  std {:.6g}  L2 {:.6g}  NaN {}  Inf {}\n", name,
                                 shape_string(shape), s.min, s.max, s.mean, s.std, s.l2, s.nan, s.inf);
  if (values > 0) {
    std::vector<float> first(v.begin(), v.begin() + std::min<std::int64_t>(values, static_cast<std::int64_t>(v.size())));
    j["values"] = first;
    text += fmt::format("  first {}: {}\n", first.size(), fmt::join(first, " "));
  }
  print(json, j, text);
  return 0;
}

// Per tensor (parameters, buffers and both AdamW moments): L2, std, the largest magnitude and the
// NaN/Inf counts; per expert of a stacked tensor: L2 and the largest magnitude. A diverging run
// shows as a max-abs or a NaN count that stands out, in the moments (v) first; the per-expert
// columns say which expert.
int cmd_stats(const CheckpointReader& f, bool json) {
  Json j{{"tensors", Json::object()}, {"experts", Json::object()}, {"routers", Json::object()}};
  std::string text;
  const auto max_abs = [](const Stats& s) { return s.count ? std::max(std::abs(s.min), std::abs(s.max)) : 0.0; };
  for (const auto& d : f.datasets()) {
    const auto v = f.read(d.path);
    const Stats s = stats_of(v.data(), v.size());
    j["tensors"][d.path] = {{"l2", s.l2}, {"std", s.std}, {"max_abs", max_abs(s)}, {"nan", s.nan}, {"inf", s.inf}};
    text += fmt::format("{:<52} L2 {:>10.4g}  std {:>9.4g}  max|x| {:>9.4g}{}\n", d.path, s.l2, s.std, max_abs(s),
                        s.nan + s.inf > 0 ? fmt::format("  NaN {} Inf {}", s.nan, s.inf) : "");
    if (d.stacked) {  // per expert
      const std::int64_t per = numel(d.shape) / d.shape[0];
      std::vector<double> norms, maxima;
      std::vector<std::int64_t> nonfinite;
      for (std::int64_t e = 0; e < d.shape[0]; ++e) {
        const Stats row = stats_of(v.data() + e * per, static_cast<std::size_t>(per));
        norms.push_back(row.l2);
        maxima.push_back(max_abs(row));  // of the finite values
        nonfinite.push_back(row.nan + row.inf);
      }
      j["experts"][d.path] = {{"l2", norms}, {"max_abs", maxima}, {"nonfinite", nonfinite}};
      text += fmt::format("    per expert L2: {:.4g}\n    per expert max|x|: {:.4g}\n", fmt::join(norms, " "),
                          fmt::join(maxima, " "));
      if (s.nan + s.inf > 0) text += fmt::format("    per expert NaN/Inf: {}\n", fmt::join(nonfinite, " "));
    }
    if (d.path.rfind(std::string(root_path(Root::Model)) + "/", 0) == 0 && d.path.ends_with("/moe/router")) {
      const std::int64_t rows = d.shape[0], cols = d.shape[1];  // [d_model, experts]: column norms
      std::vector<double> col(static_cast<std::size_t>(cols), 0.0);
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c) col[static_cast<std::size_t>(c)] += double(v[r * cols + c]) * v[r * cols + c];
      for (double& x : col) x = std::sqrt(x);
      j["routers"][d.path] = col;
      text += fmt::format("    router column L2 per expert: {:.4f}\n", fmt::join(col, " "));
    }
  }
  print(json, j, text);
  return 0;
}

int cmd_placement(const CheckpointReader& f, bool json) {
  const Json placement = Json::parse(f.string_attribute("placement"));
  const Json average = Json::parse(f.string_attribute("load_average"));
  const Json history = Json::parse(f.string_attribute("load_history"));
  Json j{{"ep", f.int_attribute("ep")}, {"placement", placement}, {"load_average", average}, {"load_history", history}};
  std::string text = fmt::format("ep {}; placement per MoE layer (expert: ranks)\n", f.int_attribute("ep"));
  if (placement.empty()) text += "  static: every EP group holds experts / ep contiguous experts per rank\n";
  for (std::size_t l = 0; l < placement.size(); ++l) {
    std::vector<std::string> parts;
    for (std::size_t e = 0; e < placement[l].size(); ++e) {
      std::vector<int> ranks;
      for (const auto& r : placement[l][e]) ranks.push_back(r["rank"].get<int>());
      parts.push_back(fmt::format("{}:{}", e, fmt::join(ranks, ",")));
    }
    text += fmt::format("  layer {}: {}\n", l, fmt::join(parts, "  "));
  }
  text += "load (token-copies per step per EP group, moving average), per MoE layer:\n";
  for (std::size_t l = 0; l < average.size(); ++l) {
    std::vector<std::string> parts;
    for (const auto& x : average[l]) parts.push_back(fmt::format("{:.0f}", x.get<double>()));
    text += fmt::format("  layer {}: {}\n", l, fmt::join(parts, " "));
  }
  text += fmt::format("history: {} step(s) recorded\n", history.size());
  print(json, j, text);
  return 0;
}

// ||a - b|| / ||a|| (0 when both are zero, inf when only a is).
double relative_change(const float* a, const float* b, std::size_t n) {
  double diff = 0, base = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    diff += d * d;
    base += double(a[i]) * a[i];
  }
  if (base == 0) return diff == 0 ? 0.0 : INFINITY;
  return std::sqrt(diff / base);
}

// The config keys whose values differ (flattened "section.key"), as [key, a, b].
Json config_differences(const CheckpointReader& a, const CheckpointReader& b) {
  Json out = Json::array();
  if (!a.has_attribute("config") || !b.has_attribute("config")) return out;
  const Json ca = Json::parse(a.string_attribute("config")).flatten(), cb = Json::parse(b.string_attribute("config")).flatten();
  std::set<std::string> keys;
  for (const auto& [k, v] : ca.items()) keys.insert(k);
  for (const auto& [k, v] : cb.items()) keys.insert(k);
  for (const std::string& k : keys) {
    const Json va = ca.contains(k) ? ca[k] : Json(), vb = cb.contains(k) ? cb[k] : Json();
    if (va != vb) {
      std::string key = k.substr(1);  // "/model/d_model" -> "model.d_model"
      for (char& c : key)
        if (c == '/') c = '.';
      out.push_back({key, va, vb});
    }
  }
  return out;
}

// Per tensor: ||A - B|| / ||A||, the largest absolute and relative element differences, and for
// stacked tensors the norm-relative change of each expert; sorted by the norm-relative change,
// largest first; then the config keys that differ. Exit 1 when an element is beyond
// atol + rtol |B| (or a tensor is missing or reshaped).
int cmd_diff(const CheckpointReader& a, const CheckpointReader& b, double rtol, double atol, bool json) {
  Json tensors = Json::array();
  std::vector<std::string> missing;
  bool beyond = false;
  std::map<std::string, Shape> in_b;
  for (const auto& d : b.datasets()) in_b[d.path] = d.shape;
  for (const auto& d : a.datasets()) {
    if (!in_b.contains(d.path) || in_b[d.path] != d.shape) {
      missing.push_back(fmt::format("{:<56} {}", d.path, in_b.contains(d.path) ? "shape differs" : "only in A"));
      continue;
    }
    const auto va = a.read(d.path), vb = b.read(d.path);
    double max_abs = 0, max_rel = 0;
    bool out = false;
    for (std::size_t i = 0; i < va.size(); ++i) {
      const double diff = std::abs(double(va[i]) - vb[i]);
      max_abs = std::max(max_abs, diff);
      max_rel = std::max(max_rel, diff / std::max(1e-30, std::abs(double(vb[i]))));
      out = out || diff > atol + rtol * std::abs(double(vb[i])) || std::isnan(diff);
    }
    beyond = beyond || out;
    Json t{{"name", d.path}, {"rel_change", relative_change(va.data(), vb.data(), va.size())}, {"max_abs", max_abs},
           {"max_rel", max_rel}, {"within", !out}};
    if (d.stacked) {
      const std::size_t per = va.size() / static_cast<std::size_t>(d.shape[0]);
      Json experts = Json::array();
      for (std::int64_t e = 0; e < d.shape[0]; ++e)
        experts.push_back(relative_change(va.data() + e * per, vb.data() + e * per, per));
      t["experts"] = experts;
    }
    tensors.push_back(t);
  }
  for (const auto& [path, shape] : in_b)
    if (!a.has(path)) missing.push_back(fmt::format("{:<56} only in B", path));
  beyond = beyond || !missing.empty();
  // A change as stored (NaN and inf become JSON null), as a sort key: largest first, NaN largest.
  const auto change = [](const Json& v) {
    const double r = v.is_number() ? v.get<double>() : INFINITY;
    return std::isnan(r) ? INFINITY : r;
  };
  const auto key = [&](const Json& t) { return change(t["rel_change"]); };
  std::stable_sort(tensors.begin(), tensors.end(), [&](const Json& x, const Json& y) { return key(x) > key(y); });
  const Json config = config_differences(a, b);
  std::string text;
  for (const auto& t : tensors) {
    text += fmt::format("{:<56} |A-B|/|A| {:.3e}  max abs {:.3e}  max rel {:.3e}{}\n", t["name"].get<std::string>(), key(t),
                        t["max_abs"].get<double>(), t["max_rel"].get<double>(), t["within"].get<bool>() ? "" : "  BEYOND");
    if (t.contains("experts")) {
      std::vector<std::pair<double, std::size_t>> order;
      for (std::size_t e = 0; e < t["experts"].size(); ++e) order.emplace_back(change(t["experts"][e]), e);
      std::sort(order.begin(), order.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
      std::vector<std::string> parts;
      for (std::size_t i = 0; i < std::min<std::size_t>(order.size(), 4); ++i)
        parts.push_back(fmt::format("{}: {:.3e}", order[i].second, order[i].first));
      text += fmt::format("    most changed experts: {}\n", fmt::join(parts, "  "));
    }
  }
  for (const auto& m : missing) text += m + "\n";
  for (const auto& c : config) text += fmt::format("config {}: {} -> {}\n", c[0].get<std::string>(), c[1].dump(), c[2].dump());
  Json j{{"tensors", tensors}, {"missing", missing}, {"config", config}, {"within", !beyond}};
  print(json, j, text + (json ? "" : (beyond ? "differences beyond tolerance\n" : "all within tolerance\n")));
  return beyond ? 1 : 0;
}

int cmd_verify(const CheckpointReader& f, bool json) {
  Json j{{"file", f.path()}, {"problems", Json::array()}};
  std::string text;
  for (const char* attr : {"step", "config", "placement", "world_size", "dp", "ep", "load_history"})
    if (!f.has_attribute(attr)) j["problems"].push_back(fmt::format("missing attribute '{}'", attr));
  std::size_t checked = 0;
  std::map<std::string, bool> model;
  for (const auto& d : f.datasets()) {
    ++checked;
    const std::string problem = f.verify(d.path);
    if (!problem.empty()) j["problems"].push_back(problem);
    if (d.path.rfind(std::string(root_path(Root::Model)) + "/", 0) == 0) model[d.path.substr(6)] = true;
  }
  // Every model tensor has both AdamW moments, but the buffers (state without a gradient).
  std::set<std::string> buffers;
  if (f.has_attribute("buffers"))
    for (const auto& b : Json::parse(f.string_attribute("buffers"))) buffers.insert(b.get<std::string>());
  for (const auto& d : f.datasets()) {
    const std::string model_root = root_path(Root::Model);
    if (d.path.rfind(model_root + "/", 0) != 0 || buffers.contains(d.path)) continue;
    for (const Root root : {Root::MomentM, Root::MomentV}) {
      const std::string moment = root_path(root) + d.path.substr(model_root.size());
      if (!f.has(moment)) j["problems"].push_back(fmt::format("'{}' has no {} moment", d.path, root_path(root)));
    }
  }
  j["datasets_checked"] = checked;
  j["ok"] = j["problems"].empty();
  for (const auto& p : j["problems"]) text += "FAIL " + p.get<std::string>() + "\n";
  text += j["ok"].get<bool>() ? fmt::format("OK: {} datasets, checksums and structure verified\n", checked)
                              : fmt::format("{} problem(s) in {}\n", j["problems"].size(), f.path());
  print(json, j, text);
  return j["ok"].get<bool>() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moerun-ckpt: inspect moerun checkpoints (HDF5)"};
  app.require_subcommand(1);
  bool json = false;
  app.add_flag("--json", json, "print JSON instead of text");
  std::string file, other, tensor;
  std::int64_t values = 0;
  double rtol = 0.0, atol = 0.0;
  auto add_file = [&](CLI::App* c) { c->add_option("FILE", file, "checkpoint file or directory")->required(); };
  auto* info = app.add_subcommand("info", "step, config summary, layout, sizes");
  auto* ls = app.add_subcommand("ls", "every tensor: name, shape, dtype, bytes");
  auto* show = app.add_subcommand("show", "statistics of one tensor");
  auto* stats = app.add_subcommand("stats", "per tensor and per expert norms, max|x| and NaN/Inf (moments too)");
  auto* placement = app.add_subcommand("placement", "expert -> ranks table and load history");
  auto* diff = app.add_subcommand("diff", "per tensor and per expert changes between two checkpoints, sorted; config changes");
  auto* verify = app.add_subcommand("verify", "checksums and structure");
  auto* config = app.add_subcommand("config", "the run's resolved config as TOML (moerun --config reads it)");
  for (auto* c : {info, ls, show, stats, placement, diff, verify, config}) {
    add_file(c);
    c->add_flag("--json", json, "print JSON instead of text");
  }
  show->add_option("TENSOR", tensor, "dataset path (/model/...) or parameter name")->required();
  show->add_option("--values", values, "also print the first N values");
  diff->add_option("OTHER", other, "the checkpoint to compare with")->required();
  diff->add_option("--rtol", rtol, "relative tolerance (default 0)");
  diff->add_option("--atol", atol, "absolute tolerance (default 0)");
  CLI11_PARSE(app, argc, argv);
  try {
    const CheckpointReader f(resolve_checkpoint(file));
    if (*info) return cmd_info(f, json);
    if (*ls) return cmd_ls(f, json);
    if (*show) return cmd_show(f, tensor, values, json);
    if (*stats) return cmd_stats(f, json);
    if (*placement) return cmd_placement(f, json);
    if (*diff) return cmd_diff(f, CheckpointReader(resolve_checkpoint(other)), rtol, atol, json);
    if (*verify) return cmd_verify(f, json);
    if (*config) return cmd_config(f, json);
  } catch (const std::exception& e) {
    if (json) {
      std::printf("%s\n", Json{{"error", e.what()}, {"ok", false}}.dump(2).c_str());
    } else {
      std::fprintf(stderr, "moerun-ckpt: %s\n", e.what());
    }
    return 2;
  }
  return 0;
}
