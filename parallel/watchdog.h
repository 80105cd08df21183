// The collective watchdog (runtime.collective_timeout): a thread per rank that watches the
// blocking communication calls (every ProcessGroup collective, point-to-point call and wait,
// and the checkpoint's collective write). When one has made no progress for the timeout —
// a peer stopped, crashed without the runtime noticing, or is stuck — it prints the call, the
// group and the step, and ends this process with exit code 1, which makes mpirun end the
// job: no rank waits forever. Completed checkpoints are untouched (a half-written one keeps
// its .tmp name). Process-wide by nature (one thread, one main thread to watch), like trace.h.
//
// Cost: each watched call stores a time and two pointers (atomics); the thread wakes once a
// second.
#pragma once

#include <cstdint>
#include <string>

namespace moerun::watchdog {

// Starts the thread (timeout <= 0: nothing is watched). Call once, from the main thread.
void start(double timeout_seconds, int world_rank);
void stop();
void set_step(std::int64_t step);  // named in the report
std::int64_t current_step();        // the last set_step (0 before the first step)
// Called with the report before the watchdog ends the process (the executable records the
// failure in the run directory). Must not block; set before start().
void set_failure_hook(void (*hook)(const char* report));

// Marks the main thread as inside a blocking call for its lifetime. `call` must be a string
// literal; `group` must outlive the scope.
class Scope {
 public:
  Scope(const char* call, const std::string& group);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  bool outer_;
};

}  // namespace moerun::watchdog
