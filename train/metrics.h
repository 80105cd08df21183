// Run outputs on rank 0: the run directory's files (config.json, metrics.jsonl) and the
// progress line on stdout (redrawn in place on a terminal, periodic plain lines otherwise).
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <string>

namespace moerun {

class MetricsWriter {
 public:
  // Creates the run directory (if needed) and opens metrics.jsonl for appending.
  explicit MetricsWriter(const std::string& run_dir);
  void write(const nlohmann::json& record);  // one line of metrics.jsonl with its "time", flushed
  void write_event(const nlohmann::json& record);  // one line of events.jsonl with its "time", flushed
  void write_file(const std::string& name, const std::string& text);  // e.g. config.json
  // A resume from `step`: metrics.jsonl keeps the lines up to that step (steps after it were
  // trained again, and the closing summary or status line is gone); the whole old file is kept as
  // metrics.before-resume-<step>.jsonl. Returns how many lines were superseded.
  std::int64_t truncate_after(std::int64_t step);
  const std::string& run_dir() const { return run_dir_; }

 private:
  std::string run_dir_;
  std::ofstream metrics_;
  std::ofstream events_;
};

// A fatal error, recorded where a monitor reading the run directory sees it: an `error` event
// in events.jsonl and a closing `"status": "failed"` line in metrics.jsonl (rank, step,
// message, time). Appends with its own streams: any rank may call it, after any failure.
void record_run_failure(const std::string& run_dir, int rank, std::int64_t step, const std::string& message);

// Seconds since the Unix epoch (wall clock, millisecond resolution): every metrics and event
// line carries it as "time".
double unix_time();

class ProgressLine {
 public:
  // mode: "auto", "redraw" or "lines" (log.progress).
  ProgressLine(std::int64_t total_steps, std::int64_t every, const std::string& mode);
  // Shows step/total, the given text, and the ETA from the mean step time so far.
  void update(std::int64_t step, const std::string& text);
  // Prints a message on its own line (the progress line is redrawn after it on a terminal).
  void message(const std::string& text);
  void finish();

 private:
  std::int64_t total_, every_;
  bool tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace moerun
