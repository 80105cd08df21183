// Checkpoint write and read time and throughput on the medium config (d_model 512, d_ff 2048,
// 8 experts, 4 layers: ~71M parameters, ~850 MB with the AdamW moments). Run under mpirun
// -np 1 or 2; compare with the disk's raw sequential write speed (dd, see docs/performance.md).
//   mpirun -np 2 bench_checkpoint DIR [repeats]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "parallel/mpi_group.h"
#include "runtime/cpu/cpu_device.h"
#include "train/trainer.h"

using namespace moerun;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  MpiEnvironment mpi(&argc, &argv);
  auto world = mpi.world();
  const std::string dir = argc > 1 ? argv[1] : "runs/bench_checkpoint";
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 3;
  const Config config = Config::load(
      std::nullopt, {"model.d_model=512", "model.d_ff=2048", "model.experts=8", "model.top_k=2", "model.seq_len=256",
                     "model.n_layers=4", "model.n_heads=8", "train.global_batch=16", "train.micro_batch=8",
                     fmt::format("parallel.ep={}", world->size()), "eval.every=0", "eval.examples=0",
                     "eval.heldout_batches=0", "checkpoint.keep=1"});
  CpuDevice dev;
  Trainer trainer(config, *world, dev, dir);
  std::vector<double> write_s, read_s;
  std::string path;
  for (int i = 0; i < repeats; ++i) {
    world->barrier();
    auto t = Clock::now();
    path = trainer.save_checkpoint(i + 1);
    write_s.push_back(std::chrono::duration<double>(Clock::now() - t).count());
    world->barrier();
    t = Clock::now();
    trainer.restore(path);
    world->barrier();
    read_s.push_back(std::chrono::duration<double>(Clock::now() - t).count());
  }
  if (world->rank() == 0) {
    const double mb = double(std::filesystem::file_size(path)) / 1e6;
    const double w = *std::min_element(write_s.begin(), write_s.end()), r = *std::min_element(read_s.begin(), read_s.end());
    fmt::print("checkpoint {:.1f} MB, {} rank(s): write {:.2f} s ({:.0f} MB/s), read {:.2f} s ({:.0f} MB/s), best of {}\n",
               mb, world->size(), w, mb / w, r, mb / r, repeats);
  }
  return 0;
}
