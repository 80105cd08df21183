// The run directory's ownership, settled before anything is written to it. A lock file
// (moerun.lock: host, pid, Slurm job id, start time; refreshed every step) keeps a second live
// job out: it refuses at once, naming the holder. A lock whose holder is gone (same host,
// process dead; or an earlier run of the same, requeued, Slurm job) or silent (another host,
// not refreshed for kStaleSeconds) is taken over with a warning. A fresh
// run (no --resume) into a directory that already holds checkpoints refuses, saying how to
// resume it or to start over with --overwrite, which moves the old contents aside
// (<dir>.replaced-<time>); old files without checkpoints are moved aside the same way, with a
// message. Collective: rank 0 decides, every rank gets the verdict and fails alike.
#pragma once

#include <string>

#include "parallel/process_group.h"

namespace moerun {

class RunDirectory {
 public:
  static constexpr int kStaleSeconds = 600;  // a step longer than this makes a live lock look stale to other hosts
  enum class Start { Fresh, Resume, Overwrite };
  // Throws RuntimeError (on every rank) when the directory cannot be used as asked.
  RunDirectory(ProcessGroup& world, std::string path, Start start);
  ~RunDirectory();  // releases the lock (rank 0)
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;
  const std::string& path() const { return path_; }
  // Rank 0: marks the lock as alive (every step; cheap).
  void refresh();

 private:
  std::string path_;
  bool owner_ = false;  // rank 0 holds the lock
};

// A default name unique per job: runs/<date>-<time>-<rank 0's pid> (collective).
std::string default_run_dir(ProcessGroup& world);

}  // namespace moerun
