// From a description of a model's tensors to what a checkpoint holds, and back. The caller
// (the trainer, or a test) names each logical tensor once per root (its parameter name, the
// shape of one copy, and for expert tensors the number of experts stacked by id) and hands
// over the pieces this rank holds; this unit turns names into datasets (format.h) and checks
// shapes when reading. No model or trainer types: checkpoint tests can use it directly.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_writer.h"
#include "checkpoint/format.h"

namespace moerun::ckpt {

class ContentBuilder {
 public:
  ContentBuilder();  // the format's name and version go in first
  // Every rank declares the same tensors in the same order (the file's datasets). Expert
  // tensors (experts > 0) are stored stacked: [experts, shape...], row = expert id.
  void declare(Root root, const std::string& param, const Shape& shape, std::int64_t experts = 0);
  // This rank writes `tensor`: rows [first_row, first_row + rows) of the declared tensor (of
  // its expert row when stacked). Every row of every tensor gets exactly one writer.
  void write(Root root, const std::string& param, const Tensor* tensor, std::int64_t first_row = 0);
  CheckpointContent& content() { return content_; }

 private:
  CheckpointContent content_;
  std::map<std::string, std::size_t> index_of_;  // dataset path -> index in content_.datasets
};

// Reads rows [first_row, first_row + into.dim(0)) of parameter `param` (shape of one copy:
// `shape`; stacked over `experts` when > 0) under `root` into `into`. A missing dataset or a
// different shape is a CheckpointError that names both and says how to resume.
void read_rows(const CheckpointReader& file, Root root, const std::string& param, const Shape& shape,
               std::int64_t experts, Tensor& into, std::int64_t first_row = 0);

}  // namespace moerun::ckpt
