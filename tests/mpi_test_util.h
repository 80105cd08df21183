// Helpers for tests that run under mpirun: the world as a ProcessGroup, and the check that a
// distributed run did the same math as the one-process reference.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
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

// Per-step losses and the parameters one rank holds, by name.
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
