#include "runtime/trace.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <vector>

#include "runtime/error.h"

namespace moerun::trace {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kMaxEvents = std::size_t{1} << 21;

struct Event {
  char phase;  // 'X' complete, 'b' / 'e' async begin / end
  std::string category, name;
  double ts_us, dur_us;
  std::int64_t id;     // async events
  std::int64_t value;  // args: index ('X') or bytes ('b'); -1 = none
};

struct Recorder {
  std::mutex mutex;  // spans may close on helper threads
  std::atomic<bool> on = false;
  int rank = 0;
  Clock::time_point zero;
  std::vector<Event> events;
  std::int64_t dropped = 0;

  double now_us() const { return std::chrono::duration<double, std::micro>(Clock::now() - zero).count(); }
  void add(Event e) {
    std::lock_guard lock(mutex);
    if (!on) return;
    if (events.size() >= kMaxEvents) {
      ++dropped;
      return;
    }
    events.push_back(std::move(e));
  }
};

Recorder& recorder() {
  static Recorder r;
  return r;
}

std::string escaped(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

bool enabled() { return recorder().on; }

void start(int rank) {
  Recorder& r = recorder();
  std::lock_guard lock(r.mutex);
  r.on = true;
  r.rank = rank;
  r.zero = Clock::now();
  r.events.clear();
  r.events.reserve(1 << 14);
  r.dropped = 0;
}

std::int64_t write(const std::string& path) {
  Recorder& r = recorder();
  std::lock_guard lock(r.mutex);
  r.on = false;
  std::FILE* f = std::fopen(path.c_str(), "w");
  MOERUN_CHECK(f != nullptr, RuntimeError, "[trace] cannot write '{}': check that the run directory is writable", path);
  fmt::print(f, "{{\"displayTimeUnit\": \"ms\", \"otherData\": {{\"rank\": {}, \"dropped_events\": {}}},\n\"traceEvents\": [\n",
             r.rank, r.dropped);
  // Names for the rows Perfetto shows: one process per rank, ordered by rank; async bucket
  // spans get their own tracks under it.
  fmt::print(f, "{{\"ph\": \"M\", \"pid\": {0}, \"tid\": 0, \"name\": \"process_name\", \"args\": {{\"name\": \"rank {0}\"}}}},\n"
                "{{\"ph\": \"M\", \"pid\": {0}, \"tid\": 0, \"name\": \"process_sort_index\", \"args\": {{\"sort_index\": {0}}}}},\n"
                "{{\"ph\": \"M\", \"pid\": {0}, \"tid\": 0, \"name\": \"thread_name\", \"args\": {{\"name\": \"main\"}}}}",
             r.rank);
  for (const Event& e : r.events) {
    const std::string name = escaped(e.name), cat = escaped(e.category);
    if (e.phase == 'X') {
      fmt::print(f, ",\n{{\"ph\": \"X\", \"pid\": {}, \"tid\": 0, \"cat\": \"{}\", \"name\": \"{}\", \"ts\": {:.3f}, \"dur\": {:.3f}",
                 r.rank, cat, name, e.ts_us, e.dur_us);
      if (e.value >= 0) fmt::print(f, ", \"args\": {{\"index\": {}}}", e.value);
    } else {
      fmt::print(f, ",\n{{\"ph\": \"{}\", \"pid\": {}, \"tid\": 0, \"cat\": \"{}\", \"name\": \"{}\", \"id\": \"{}-{}\", \"ts\": {:.3f}",
                 e.phase, r.rank, cat, name, r.rank, e.id, e.ts_us);
      if (e.value >= 0) fmt::print(f, ", \"args\": {{\"bytes\": {}}}", e.value);
    }
    std::fputs("}", f);
  }
  std::fputs("\n]}\n", f);
  const bool ok = std::fflush(f) == 0 && std::ferror(f) == 0;
  std::fclose(f);
  MOERUN_CHECK(ok, RuntimeError, "[trace] writing '{}' failed (disk full?)", path);
  const auto written = static_cast<std::int64_t>(r.events.size());
  r.events.clear();
  r.events.shrink_to_fit();
  return written;
}

Scope::Scope(std::string_view category, std::string_view name, int index) : on_(enabled()), index_(index) {
  if (!on_) return;
  category_ = category;
  name_ = index >= 0 ? fmt::format("{} {}", name, index) : std::string(name);
  start_us_ = recorder().now_us();
}

Scope::~Scope() {
  if (!on_) return;
  Recorder& r = recorder();
  const double end = r.now_us();
  r.add({'X', std::move(category_), std::move(name_), start_us_, end - start_us_, 0, index_});
}

void async_begin(std::string_view category, std::string_view name, std::int64_t id, std::int64_t bytes) {
  if (!enabled()) return;
  Recorder& r = recorder();
  r.add({'b', std::string(category), std::string(name), r.now_us(), 0.0, id, bytes});
}

void async_end(std::string_view category, std::string_view name, std::int64_t id) {
  if (!enabled()) return;
  Recorder& r = recorder();
  r.add({'e', std::string(category), std::string(name), r.now_us(), 0.0, id, -1});
}

}  // namespace moerun::trace
