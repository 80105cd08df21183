#include "train/metrics.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "runtime/error.h"

namespace moerun {

MetricsWriter::MetricsWriter(const std::string& run_dir) : run_dir_(run_dir) {
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  MOERUN_CHECK(!ec, RuntimeError, "[run dir] cannot create '{}': {}; choose another --run-dir", run_dir, ec.message());
  metrics_.open(run_dir + "/metrics.jsonl", std::ios::app);
  MOERUN_CHECK(metrics_.good(), RuntimeError, "[run dir] cannot write '{}/metrics.jsonl'", run_dir);
}

namespace {
nlohmann::json stamped(const nlohmann::json& record) {
  nlohmann::json line = record;
  if (line.is_object() && !line.contains("time")) line["time"] = unix_time();
  return line;
}
}  // namespace

double unix_time() {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  return double(ms.count()) / 1000.0;
}

void MetricsWriter::write_event(const nlohmann::json& record) {
  if (!events_.is_open()) events_.open(run_dir_ + "/events.jsonl", std::ios::app);
  events_ << stamped(record).dump() << '\n';
  events_.flush();
}

void MetricsWriter::write(const nlohmann::json& record) {
  metrics_ << stamped(record).dump() << '\n';
  metrics_.flush();
}

void record_run_failure(const std::string& run_dir, int rank, std::int64_t step, const std::string& message) {
  const double time = unix_time();
  const auto append = [&](const char* file, const nlohmann::json& line) {
    std::ofstream out(run_dir + "/" + file, std::ios::app);
    out << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  };
  append("events.jsonl", {{"event", "error"}, {"rank", rank}, {"step", step}, {"message", message}, {"time", time}});
  append("metrics.jsonl", {{"status", "failed"}, {"rank", rank}, {"step", step}, {"error", message}, {"time", time}});
}

std::int64_t MetricsWriter::truncate_after(std::int64_t step) {
  const std::string path = run_dir_ + "/metrics.jsonl";
  metrics_.close();
  std::vector<std::string> kept;
  std::int64_t superseded = 0;
  {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      // The closing lines (summary, status) belonged to the run that ended; the resumed run writes its own.
      const bool keep = !j.is_discarded() && !j.contains("summary") && !j.contains("status") &&
                        j.value("step", std::int64_t{0}) <= step;
      if (keep) kept.push_back(line);
      else superseded += line.empty() ? 0 : 1;
    }
  }
  if (superseded > 0) {
    std::filesystem::rename(path, fmt::format("{}/metrics.before-resume-{}.jsonl", run_dir_, step));
    std::ofstream out(path);
    for (const std::string& line : kept) out << line << '\n';
    MOERUN_CHECK(out.good(), RuntimeError, "[run dir] cannot rewrite '{}'", path);
  }
  metrics_.open(path, std::ios::app);
  MOERUN_CHECK(metrics_.good(), RuntimeError, "[run dir] cannot write '{}'", path);
  return superseded;
}

void MetricsWriter::write_file(const std::string& name, const std::string& text) {
  std::ofstream out(run_dir_ + "/" + name);
  out << text;
  MOERUN_CHECK(out.good(), RuntimeError, "[run dir] cannot write '{}/{}'", run_dir_, name);
}

namespace {
bool redraw_in_place(const std::string& mode) {
  if (mode != "auto") return mode == "redraw";
  // mpirun hands rank 0 a pseudo-terminal even when its own output goes to a file.
  const bool under_mpirun = std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr;
  return ::isatty(STDOUT_FILENO) != 0 && !under_mpirun;
}
}  // namespace

ProgressLine::ProgressLine(std::int64_t total_steps, std::int64_t every, const std::string& mode)
    : total_(total_steps), every_(every), tty_(redraw_in_place(mode)) {}

void ProgressLine::update(std::int64_t step, const std::string& text) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = step > 0 ? elapsed / double(step) * double(total_ - step) : 0.0;
  const auto secs = static_cast<long>(eta);
  const std::string line = fmt::format("step {}/{} | {} | ETA {}:{:02d}", step, total_, text, secs / 60, secs % 60);
  if (tty_) {
    std::printf("\r\033[K%s", line.c_str());
    drawn_ = true;
  } else if (step % every_ == 0 || step == total_ || step == 1) {
    std::printf("%s\n", line.c_str());
  }
  std::fflush(stdout);
}

void ProgressLine::message(const std::string& text) {
  if (tty_ && drawn_) std::printf("\r\033[K");
  std::printf("%s\n", text.c_str());
  drawn_ = false;
  std::fflush(stdout);
}

void ProgressLine::finish() {
  if (tty_ && drawn_) std::printf("\n");
  drawn_ = false;
  std::fflush(stdout);
}

}  // namespace moerun
