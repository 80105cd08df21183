// Writes one checkpoint collectively with parallel HDF5 (MPI-IO): every rank creates the same
// datasets, then writes only its pieces (hyperslabs of stacked expert tensors, or whole dense
// tensors). Checksums (CRC-32 per row, combined per dataset) are gathered so every rank writes
// the same attributes. The file is written to "<name>.tmp", closed (flushed), renamed by rank 0,
// and only then does `latest` point to it; the newest `keep` checkpoints are kept. A crash at
// any moment leaves the previous checkpoint and `latest` as they were.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <mpi.h>

#include "parallel/process_group.h"
#include "runtime/tensor.h"

namespace moerun::ckpt {

struct DatasetSpec {
  std::string path;        // "/model/layers/1/moe/experts/w1"
  Shape shape;             // full logical shape; stacked: [experts, ...]
  bool stacked = false;    // one row per expert
};

struct Piece {
  std::size_t dataset = 0;  // index into the specs
  std::int64_t row = -1;    // stacked: the expert row; dense: -1
  const Tensor* tensor = nullptr;
  // The tensor holds rows [first_row, first_row + tensor->dim(0)) of the logical tensor (of
  // the expert row when stacked); pieces of one tensor or row together cover all its rows.
  std::int64_t first_row = 0;
};

struct CheckpointContent {
  std::vector<DatasetSpec> datasets;  // identical on every rank, same order
  std::vector<Piece> pieces;          // this rank's writes; every row of every tensor has one writer
  std::map<std::string, std::int64_t> int_attributes;
  std::map<std::string, std::string> string_attributes;
};

// Returns the final path of the file. Collective over `world`; `comm` is its MPI communicator
// for MPI-IO, or MPI_COMM_NULL for a one-process world (plain POSIX I/O).
std::string write_checkpoint(ProcessGroup& world, MPI_Comm comm, const std::string& dir, std::int64_t step,
                             const CheckpointContent& content, int keep);

}  // namespace moerun::ckpt
