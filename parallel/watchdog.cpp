#include "parallel/watchdog.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

namespace moerun::watchdog {

namespace {
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_enabled{false};
std::atomic<std::int64_t> g_entered_ns{0};  // 0: not inside a watched call
std::atomic<const char*> g_call{nullptr};
std::atomic<const std::string*> g_group{nullptr};
std::atomic<std::int64_t> g_step{0};
double g_timeout = 0.0;
int g_rank = 0;
void (*g_failure_hook)(const char*) = nullptr;
std::thread g_thread;
std::mutex g_mutex;
std::condition_variable g_wake;
bool g_stop = false;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

void watch() {
  std::unique_lock<std::mutex> lock(g_mutex);
  while (!g_wake.wait_for(lock, std::chrono::seconds(1), [] { return g_stop; })) {
    const std::int64_t entered = g_entered_ns.load();
    if (entered == 0) continue;
    const double waited = double(now_ns() - entered) / 1e9;
    if (waited < g_timeout) continue;
    const char* call = g_call.load();
    const std::string* group = g_group.load();
    char report[1024];
    std::snprintf(report, sizeof report,
                  "moerun watchdog: no progress for %.0f s in %s on group '%s' at step %lld "
                  "(runtime.collective_timeout = %.0f s): a peer rank is stopped, dead or stuck; ending the job. "
                  "Completed checkpoints are intact; resume from the run directory's latest",
                  waited, call != nullptr ? call : "?", group != nullptr ? group->c_str() : "?",
                  static_cast<long long>(g_step.load()), g_timeout);
    std::fprintf(stderr, "[rank %d] %s\n", g_rank, report);
    std::fflush(stderr);
    if (g_failure_hook != nullptr) g_failure_hook(report);
    _exit(1);  // a process exit: mpirun then ends every rank
  }
}
}  // namespace

void start(double timeout_seconds, int world_rank) {
  if (timeout_seconds <= 0 || g_thread.joinable()) return;
  g_timeout = timeout_seconds;
  g_rank = world_rank;
  g_stop = false;
  g_enabled = true;
  g_thread = std::thread(watch);
}

void stop() {
  if (!g_thread.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_stop = true;
  }
  g_wake.notify_all();
  g_thread.join();
  g_enabled = false;
}

void set_step(std::int64_t step) { g_step = step; }
std::int64_t current_step() { return g_step.load(); }
void set_failure_hook(void (*hook)(const char* report)) { g_failure_hook = hook; }

Scope::Scope(const char* call, const std::string& group) : outer_(g_enabled.load() && g_entered_ns.load() == 0) {
  if (!outer_) return;  // nested calls keep the outer one's start and name
  g_call = call;
  g_group = &group;
  g_entered_ns = now_ns();
}

Scope::~Scope() {
  if (outer_) g_entered_ns = 0;
}

}  // namespace moerun::watchdog
