// Trace: this process's timeline as Chrome trace-event JSON (opens in Perfetto or
// chrome://tracing). Spans cover the step, forward and backward per block, the experts, the
// all-to-all dispatch and combine, each gradient all-reduce bucket in flight, the optimizer,
// rebalancing, evaluation and checkpoints. Off unless started (log.trace = true); then a span
// costs two clock reads and one small record. Ranks start their clocks right after a common
// barrier, so `launch/merge_traces.py` can put every rank on one time axis.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace moerun::trace {

bool enabled();
// Enables recording with time zero now; `rank` becomes the process id in the file.
void start(int rank);
// Writes what was recorded (JSON object with "traceEvents") and stops recording. Returns the
// number of events written; events beyond the cap (2^21) are counted in the metadata instead.
std::int64_t write(const std::string& path);

// A span on the main timeline: from construction to destruction. `index` >= 0 is appended to
// the name ("forward 2") and stored as args.index.
class Scope {
 public:
  Scope(std::string_view category, std::string_view name, int index = -1);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  bool on_;
  std::string category_, name_;
  int index_;
  double start_us_ = 0.0;
};

// Spans that overlap the main timeline (an all-reduce in flight while backward runs): begin
// and end are matched by (category, id) and drawn on their own track.
void async_begin(std::string_view category, std::string_view name, std::int64_t id, std::int64_t bytes);
void async_end(std::string_view category, std::string_view name, std::int64_t id);

}  // namespace moerun::trace
