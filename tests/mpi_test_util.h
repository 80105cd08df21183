// Helpers for tests that run under mpirun: the world as a ProcessGroup, and the check that a
// distributed run did the same math as the one-process reference.
#pragma once

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "parallel/mpi_group.h"

namespace moerun::test {

inline std::unique_ptr<ProcessGroup> world() {
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  return std::make_unique<MpiGroup>(dup, "world");
}

// A fresh temporary directory name every rank agrees on (rank 0 picks and clears it).
inline std::string shared_dir(ProcessGroup& w, const std::string& tag) {
  std::string name;
  if (w.rank() == 0) {
    const auto dir = std::filesystem::temp_directory_path() / fmt::format("moerun_ckpt_{}_{}_{}", tag, ::getpid(), w.size());
    std::filesystem::remove_all(dir);
    name = dir.string();
  }
  return w.broadcast_text(name);
}

// The tiny model the multi-rank tests train: 2 layers, 4 experts top-2, 8 sequences of 32 per
// step in micro-batches of 2 (so that 1, 2 and 4 ranks all divide it), no evaluation, small
// gradient buckets (several per step). Tests append their own overrides.
inline std::vector<std::string> tiny_training_overrides() {
  return {"model.d_model=32", "model.n_heads=2", "model.d_ff=48", "model.seq_len=32", "model.n_layers=2",
          "model.experts=4", "model.top_k=2", "train.global_batch=8", "train.micro_batch=2", "train.warmup_steps=3",
          "eval.every=0", "eval.examples=0", "eval.heldout_batches=0", "parallel.bucket_mb=0.01"};
}

// The DeepSeek-MoE block on the tiny model: a shared expert, sigmoid scores, aux-free balancing
// (a fast bias, so that it changes the routing within a test's steps) with the sequence-wise
// loss as its complement, RMSNorm and RoPE.
inline std::vector<std::string> deepseek_block_overrides() {
  return {"model.shared_experts=1", "model.shared_d_ff=16", "model.router_score=\"sigmoid\"", "model.z_loss_coef=0",
          "model.balance=\"aux_free\"", "model.balance_rate=0.01", "model.norm=\"rmsnorm\"", "model.position=\"rope\""};
}

// Per-step losses and the parameters (and model buffers) one rank holds, by name.
struct RunResult {
  std::vector<double> losses;
  std::map<std::string, std::vector<float>> params;
};

// Losses and every parameter this rank holds equal the reference's to rtol 1e-5.
inline void expect_same_training(const RunResult& run, const RunResult& reference) {
  ASSERT_EQ(run.losses.size(), reference.losses.size());
  for (std::size_t s = 0; s < run.losses.size(); ++s)
    EXPECT_NEAR(run.losses[s], reference.losses[s], 1e-5 * std::abs(reference.losses[s])) << "step " << s + 1;
  for (const auto& [name, values] : run.params) {
    ASSERT_TRUE(reference.params.contains(name)) << name;
    const auto& ref = reference.params.at(name);
    double worst = 0.0;
    std::size_t at = 0;
    for (std::size_t i = 0; i < values.size(); ++i) {
      const double excess = std::abs(values[i] - ref[i]) - (1e-5 * std::abs(ref[i]) + 1e-6);
      if (excess > worst) worst = excess, at = i;
    }
    EXPECT_EQ(worst, 0.0) << name << "[" << at << "]: " << values[at] << " vs single-process " << ref[at];
  }
}

}  // namespace moerun::test
