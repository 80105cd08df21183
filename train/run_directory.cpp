#include "train/run_directory.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "checkpoint/format.h"
#include "runtime/error.h"

namespace moerun {

namespace fs = std::filesystem;

namespace {
std::string host_name() {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

std::string now_text(const char* format) {
  char text[64] = {0};
  const std::time_t now = std::time(nullptr);
  std::strftime(text, sizeof(text), format, std::localtime(&now));
  return text;
}

struct LockHolder {
  std::string host;
  long pid = 0;
  std::string job;  // SLURM_JOB_ID, or "-"
  std::string since;
};

std::string slurm_job() {
  const char* job = std::getenv("SLURM_JOB_ID");
  return job != nullptr && *job != '\0' ? job : "-";
}

std::optional<LockHolder> read_lock(const fs::path& lock) {
  std::ifstream in(lock);
  LockHolder h;
  if (!(in >> h.host >> h.pid >> h.job)) return std::nullopt;
  std::getline(in >> std::ws, h.since);
  return h;
}

// A moerun process with this pid runs on this host (not a zombie, not a reused pid).
bool process_alive(long pid) {
  if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  const fs::path proc = fs::path("/proc") / std::to_string(pid);
  if (!fs::exists(proc)) return !fs::exists("/proc/self");  // no /proc at all: trust kill()
  std::ifstream stat(proc / "stat");
  std::string line;
  std::getline(stat, line);
  const auto close = line.rfind(')');
  if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z') return false;
  std::ifstream cmdline(proc / "cmdline");
  std::string command;
  std::getline(cmdline, command, '\0');
  return command.find("moerun") != std::string::npos;
}

// Why the lock's holder is gone, or nothing when it may still be running.
std::optional<std::string> stale_reason(const fs::path& lock, const LockHolder& h) {
  // A requeued Slurm job keeps its id: a lock with this job's id is its previous incarnation's.
  if (h.job != "-" && h.job == slurm_job()) return fmt::format("an earlier run of this Slurm job ({})", h.job);
  if (h.host == host_name()) {
    if (!process_alive(h.pid)) return fmt::format("process {} is gone", h.pid);
    return std::nullopt;
  }
  const auto age = std::chrono::duration_cast<std::chrono::seconds>(fs::file_time_type::clock::now() -
                                                                   fs::last_write_time(lock)).count();
  if (age > RunDirectory::kStaleSeconds) return fmt::format("not refreshed for {} s", age);
  return std::nullopt;
}

bool holds_checkpoints(const fs::path& dir, std::string& which) {
  const fs::path checkpoints = dir / "checkpoints";
  if (!fs::is_directory(checkpoints)) return false;
  for (const auto& entry : fs::directory_iterator(checkpoints))
    if (ckpt::step_of_file(entry.path().filename().string())) {
      which = entry.path().filename().string();
      return true;
    }
  return false;
}

// Rank 0's part; returns an error message, or empty when the lock is ours.
std::string take(const fs::path& dir, RunDirectory::Start start, std::string& note) {
  const fs::path lock = dir / "moerun.lock";
  if (fs::exists(lock)) {
    const auto holder = read_lock(lock);
    const auto stale = holder ? stale_reason(lock, *holder) : std::optional<std::string>("unreadable");
    if (!stale) {
      return fmt::format("run directory '{}' is in use by process {} on {} (since {}); wait for that job to end, or "
                         "choose another --run-dir",
                         dir.string(), holder->pid, holder->host, holder->since);
    }
    note += fmt::format("warning: taking over the stale lock of '{}' ({}: {})\n", dir.string(),
                        holder ? fmt::format("process {} on {}", holder->pid, holder->host) : "no holder", *stale);
    fs::remove(lock);
  }
  std::string checkpoint;
  const bool used = fs::exists(dir) && !fs::is_empty(dir);
  if (start != RunDirectory::Start::Resume && used) {
    if (holds_checkpoints(dir, checkpoint) && start == RunDirectory::Start::Fresh) {
      return fmt::format("run directory '{}' already holds checkpoints ({}); continue that run with --resume {}, or "
                         "start over with --overwrite (its contents are moved aside, not deleted)",
                         dir.string(), checkpoint, dir.string());
    }
    const fs::path aside = dir.string() + ".replaced-" + now_text("%Y%m%d-%H%M%S");
    fs::rename(dir, aside);
    note += fmt::format("note: the earlier contents of '{}' were moved to '{}'\n", dir.string(), aside.string());
  }
  fs::create_directories(dir);
  std::ofstream out(lock, std::ios::out | std::ios::trunc);
  out << host_name() << " " << getpid() << " " << slurm_job() << " " << now_text("%Y-%m-%d %H:%M:%S") << "\n";
  out.close();
  if (!out) return fmt::format("cannot write the lock '{}': check the directory's permissions and free space", lock.string());
  return {};
}
}  // namespace

RunDirectory::RunDirectory(ProcessGroup& world, std::string path, Start start) : path_(std::move(path)) {
  std::string error, note;
  if (world.rank() == 0) {
    try {
      error = take(path_, start, note);
    } catch (const fs::filesystem_error& e) {
      error = fmt::format("cannot prepare run directory '{}': {}", path_, e.what());
    }
    if (!note.empty()) std::fputs(note.c_str(), stderr);
  }
  error = world.broadcast_text(error);  // every rank fails alike
  MOERUN_CHECK(error.empty(), RuntimeError, "[run directory] {}", error);
  owner_ = world.rank() == 0;
}

RunDirectory::~RunDirectory() {
  if (!owner_) return;
  std::error_code ignored;
  fs::remove(fs::path(path_) / "moerun.lock", ignored);
}

void RunDirectory::refresh() {
  if (!owner_) return;
  std::error_code ignored;
  fs::last_write_time(fs::path(path_) / "moerun.lock", fs::file_time_type::clock::now(), ignored);
}

std::string default_run_dir(ProcessGroup& world) {
  // Every rank agrees on rank 0's name.
  return world.broadcast_text(world.rank() == 0 ? fmt::format("runs/{}-{}", now_text("%Y%m%d-%H%M%S"), getpid()) : "");
}

}  // namespace moerun
