// GoogleTest main for tests run under mpirun: initializes MPI, keeps the printing of rank 0
// only, and all-reduces the verdict so that every rank exits with the same code.
#include <gtest/gtest.h>

#include <cstdlib>

#include "parallel/mpi_group.h"

int main(int argc, char** argv) {
  moerun::MpiEnvironment mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0 && std::getenv("MOERUN_TEST_ALL_RANKS") == nullptr) {  // set it to see every rank's output
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && any_failed && !failed) std::printf("[moerun] a test failed on another rank (its output is hidden)\n");
  return any_failed;
}
