// moerun: trains the MoE transformer. Run alone or under mpirun:
//   moerun [--config FILE.toml] [--set section.key=value ...] [--run-dir DIR] [--resume DIR_OR_FILE]
// Any error on any rank prints "[rank r] ..." and ends the whole job with a non-zero exit.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <thread>

#include "parallel/mpi_group.h"
#include "parallel/watchdog.h"
#include "runtime/error.h"
#include "runtime/device_registry.h"
#include "runtime/human_bytes.h"
#include "train/config.h"
#include "train/memory_plan.h"
#include "train/metrics.h"
#include "train/signals.h"
#include "checkpoint/checkpoint_reader.h"
#include "train/rank_agreement.h"
#include "train/run_directory.h"
#include "train/trainer.h"

namespace {

// Compute threads per rank: the user's OMP_NUM_THREADS or runtime.threads, else the node's
// cores shared evenly by the ranks on it (several ranks each starting all-core thread pools
// would fight over the cores).
int choose_threads(const moerun::Config& config, moerun::ProcessGroup& world, std::string& why) {
  auto node = world.split_node_local("node");
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  if (std::getenv("OMP_NUM_THREADS") != nullptr) {
    why = "from OMP_NUM_THREADS";
    return omp_get_max_threads();
  }
  if (config.runtime.threads > 0) {
    why = "from runtime.threads";
    return static_cast<int>(config.runtime.threads);
  }
  why = fmt::format("{} cores / {} ranks on this node", cores, node->size());
  return std::max(1, cores / node->size());
}

// Ends the job after an error: every rank (MPI_Abort) when there are several; a single process
// exits without MPI_Finalize, which would run HDF5's close callbacks on a file whose write
// failed (a segfault after a full disk).
[[noreturn]] void end_after_error(int size) {
  if (size > 1) moerun::MpiEnvironment::abort(1);
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(1);
}

// Where a fatal error is recorded (train/metrics.h: record_run_failure): the run directory once
// it is this job's, and this rank. The watchdog's thread reads them too.
std::string g_failure_dir;
int g_failure_rank = 0;

void record_failure(const std::string& message) {
  if (!g_failure_dir.empty())
    moerun::record_run_failure(g_failure_dir, g_failure_rank, moerun::watchdog::current_step(), message);
}

// The resolved config a checkpoint was written with (its "config" attribute).
nlohmann::json stored_config(const std::string& resume) {
  const moerun::ckpt::CheckpointReader file(moerun::ckpt::resolve_checkpoint(resume));
  return nlohmann::json::parse(file.string_attribute("config"));
}

// The run directory a checkpoint belongs to: <run-dir>/checkpoints/step_N.h5 -> <run-dir>.
std::string resume_run_dir(const std::string& resume) {
  std::filesystem::path p = std::filesystem::absolute(resume);
  if (std::filesystem::is_regular_file(p)) p = p.parent_path();
  if (p.filename() == "checkpoints") p = p.parent_path();
  return p.string();
}

}  // namespace

int main(int argc, char** argv) {
  // First, before MPI and oneDNN start threads: they inherit the blocked checkpoint signals.
  moerun::block_checkpoint_signals();
  std::unique_ptr<moerun::MpiEnvironment> mpi;
  std::unique_ptr<moerun::ProcessGroup> world;
  int rank = 0, size = 1;
  try {
    mpi = std::make_unique<moerun::MpiEnvironment>(&argc, &argv);
    world = mpi->world();
    rank = world->rank();
    size = world->size();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moerun: %s\n", e.what());
    return 1;
  }

  CLI::App app{"moerun: distributed training of sparse Mixture-of-Experts models"};
  std::optional<std::string> config_file;
  std::vector<std::string> overrides;
  std::string run_dir;
  std::string resume;
  bool reference = false;
  bool overwrite = false;
  bool dry_run = false;
  int dry_world = 0;
  app.add_option("--config", config_file, "TOML config file, or a run directory's config.json (every key has a default)")->check(CLI::ExistingFile);
  app.add_option("--set", overrides, "override a key: --set section.key=value (repeatable)");
  app.add_option("--run-dir", run_dir, "directory for config.json and metrics.jsonl (default runs/<date>-<time>-<pid>; one live job per directory)");
  app.add_option("--resume", resume,
                 "continue from a checkpoint: a step_<N>.h5 file, a checkpoints directory or a run directory "
                 "(its latest checkpoint); any world size and parallel.ep");
  app.add_flag("--overwrite", overwrite,
               "start a fresh run in a --run-dir that already holds one (its contents are moved aside to "
               "<dir>.replaced-<time>, not deleted)");
  app.set_version_flag("--version", moerun::program_version(), "print the version and the commit it was built from, and exit");
  app.add_flag("--config-reference", reference, "print every config key as a Markdown table and exit");
  app.add_flag("--dry-run", dry_run,
               "check the layout and print the memory estimate per rank (parameters, gradients, optimizer, "
               "activations, peak), then exit; no mpirun needed");
  app.add_option("--world-size", dry_world, "with --dry-run: plan for this many ranks (default: the ranks started)")
      ->check(CLI::PositiveNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = rank == 0 ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 2);
    return code;
  }
  if (reference) {
    if (rank == 0) std::fputs(moerun::Config::reference_markdown().c_str(), stdout);
    return 0;
  }

  try {
    // A resumed run starts from the configuration stored in its checkpoint.
    std::vector<std::string> config_changes;
    const moerun::Config config = resume.empty() ? moerun::Config::load(config_file, overrides)
                                                 : moerun::Config::resume(stored_config(resume), config_file, overrides,
                                                                          config_changes);
    if (dry_run) {
      const int planned = dry_world > 0 ? dry_world : size;
      config.validate(planned);
      if (rank == 0) {
        const auto probe = moerun::make_device(config.runtime.device);
        // Over runtime.memory_limit this throws; its message carries the same table. "auto" plans
        // parallel.ranks_per_node ranks (default one) on nodes with this machine's memory.
        const int per_node = config.parallel.ranks_per_node > 0 ? static_cast<int>(config.parallel.ranks_per_node) : 1;
        const auto est = moerun::checked_memory_estimate(config, planned, !probe->host_accessible(), per_node);
        std::printf("moerun --dry-run: %d rank(s) = dp %lld x ep %lld, %lld micro-batch(es) of %lld sequences per rank "
                    "per step; device memory per rank (every rank alike):\n%s",
                    planned, static_cast<long long>(config.dp(planned)), static_cast<long long>(config.parallel.ep),
                    static_cast<long long>(config.micro_batches_per_rank(planned)),
                    static_cast<long long>(config.train.micro_batch), est.table().c_str());
        if (const std::int64_t limit = moerun::parse_memory_limit(config.runtime.memory_limit, per_node); limit > 0)
          std::printf("fits runtime.memory_limit = %s (%s per rank, %d rank(s) per node)\n",
                      config.runtime.memory_limit.c_str(), moerun::human_bytes(double(limit)).c_str(), per_node);
      }
      return 0;
    }
    config.validate(size);
    moerun::check_ranks_agree(*world, config);  // before anything is written
    moerun::watchdog::set_failure_hook([](const char* report) { record_failure(report); });
    moerun::watchdog::start(config.runtime.collective_timeout, rank);
    const struct StopWatchdog {
      ~StopWatchdog() { moerun::watchdog::stop(); }
    } stop_watchdog;
    std::string threads_why;
    const int threads = choose_threads(config, *world, threads_why);
    omp_set_num_threads(threads);
    if (run_dir.empty() && !resume.empty()) run_dir = resume_run_dir(resume);
    if (run_dir.empty()) run_dir = moerun::default_run_dir(*world);
    // Before anything is written: a live job in this directory, or a fresh run over checkpoints, stops here.
    moerun::RunDirectory directory(*world, run_dir,
                                   !resume.empty() ? moerun::RunDirectory::Start::Resume
                                   : overwrite     ? moerun::RunDirectory::Start::Overwrite
                                                   : moerun::RunDirectory::Start::Fresh);
    g_failure_dir = run_dir;  // this job's directory from here on: failures are recorded in it
    g_failure_rank = rank;
    if (rank == 0) std::printf("moerun: %d rank(s), %d compute thread(s) per rank (%s), run directory %s\n", size, threads,
                               threads_why.c_str(), run_dir.c_str());
    const auto device = moerun::make_device(config.runtime.device);
    moerun::Trainer trainer(config, *world, *device, run_dir);
    if (!resume.empty()) trainer.restore(resume, config_changes);
    trainer.set_step_callback([&directory] { directory.refresh(); });
    trainer.run();
  } catch (const moerun::Error& e) {
    // Configuration and data errors are seen identically by every rank: say it once.
    const bool everywhere = e.subsystem() == moerun::Subsystem::Config || e.subsystem() == moerun::Subsystem::Data;
    if (!everywhere || rank == 0) {
      std::fprintf(stderr, "[rank %d] moerun %s error: %s\n", rank, std::string(moerun::subsystem_name(e.subsystem())).c_str(),
                   e.what());
      record_failure(e.what());
    }
    end_after_error(size);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] moerun error: %s\n", rank, e.what());
    record_failure(e.what());
    end_after_error(size);
  }
  return 0;
}
