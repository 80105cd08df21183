// The run log: what a run tells its user, in one place. Rank 0 prints the progress line and
// messages, and, with a run directory, writes config.json, metrics.jsonl (one line per step,
// evaluation lines with "eval": true, a closing "summary" line) and events.jsonl (rebalances,
// checkpoints). The schema of those files is defined here and nowhere else (docs/training.md
// describes it). Other ranks hold a RunLog too; its calls do nothing there.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "runtime/human_bytes.h"
#include "train/config.h"
#include "train/evaluator.h"
#include "train/memory_plan.h"
#include "train/metrics.h"
#include "train/step_stats.h"

namespace moerun {

class RunLog {
 public:
  // run_dir empty: no files (tests).
  RunLog(const Config& config, int rank, const std::string& run_dir);
  bool active() const { return progress_ != nullptr; }  // rank 0
  void message(const std::string& text);  // its own line
  void memory_estimate(const MemoryEstimate& e);  // the start-up line of the estimate's terms
  // The start-up line of the precision and how the device computes it; every metrics line
  // then carries "precision", the summary line also "compute_path".
  void precision(DType compute_dtype, const std::string& device_path);
  void step(std::int64_t step, const StepResult& r);
  void eval(std::int64_t step, const EvalResult& r);
  void event(const nlohmann::json& record);  // one line of events.jsonl
  // A resume from `step`: later metrics lines of the interrupted run are set aside
  // (MetricsWriter::truncate_after); returns how many.
  std::int64_t resume_at(std::int64_t step);
  struct Summary {
    std::int64_t steps = 0;
    double first_loss = 0.0, last_loss = 0.0, tokens_per_s = 0.0;
    int rebalances = 0;
    std::int64_t peak_device_bytes = 0, optimizer_state_bytes = 0, peak_rss_bytes = 0;
    MemoryEstimate estimate;
  };
  void summary(const Summary& s);  // the closing line, "status": "completed"
  // A run that ends early without failing (a checkpoint signal): its closing status line.
  void stopped(std::int64_t step);

 private:
  std::unique_ptr<MetricsWriter> metrics_;  // rank 0 with a run directory
  std::unique_ptr<ProgressLine> progress_;  // rank 0
  std::string precision_ = "fp32", compute_path_ = "native";
};

}  // namespace moerun
