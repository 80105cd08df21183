// Reads a moerun checkpoint, serially (every rank opens the file read-only on its own, and the
// inspection tool runs without MPI). Opening checks the format name and version; reads check
// the per-row or whole-dataset CRC-32. Every refusal says what differs and how to proceed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/hdf5_handles.h"
#include "runtime/tensor.h"

namespace moerun::ckpt {

// A directory (a run directory, or its checkpoints/ folder: follows `latest`) or a file.
std::string resolve_checkpoint(const std::string& dir_or_file);

struct DatasetInfo {
  std::string path;
  Shape shape;
  bool stacked = false;  // has per-row checksums (expert tensors)
};

class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& path);
  const std::string& path() const { return path_; }
  std::int64_t int_attribute(const std::string& name) const;
  std::string string_attribute(const std::string& name) const;
  bool has_attribute(const std::string& name) const;
  std::vector<std::string> attribute_names() const;
  // Every dataset, in path order.
  std::vector<DatasetInfo> datasets() const;
  bool has(const std::string& dataset) const;
  Shape shape(const std::string& dataset) const;
  // Whole dataset (verifies its crc32) or one row of a stacked dataset (verifies crc32_rows).
  std::vector<float> read(const std::string& dataset) const;
  std::vector<float> read_row(const std::string& dataset, std::int64_t row) const;
  // Recomputes a dataset's checksum; returns an empty string when it matches, else why not
  // (for a stacked dataset, with the expert rows whose own checksums fail).
  std::string verify(const std::string& dataset) const;

 private:
  std::vector<float> read_selection(const std::string& dataset, std::optional<std::int64_t> row) const;
  std::string path_;
  h5::Handle file_;
};

}  // namespace moerun::ckpt
