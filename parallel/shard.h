// ZeRO-1 partitions: which rows of a set of tensors each rank of a group owns. The tensors
// (a gradient bucket, in bucket order) are laid end to end and cut into one block per rank of
// about equal elements, each cut moved to the nearest row boundary, so that every rank owns
// whole rows of every tensor: contiguous pieces that the optimizer updates and a checkpoint
// writes as hyperslabs. Rows are the first dimension (elements of a 1-D tensor).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace moerun {

struct RowRange {
  std::int64_t begin = 0, end = 0;
  std::int64_t rows() const { return end - begin; }
  bool empty() const { return end <= begin; }
  friend bool operator==(const RowRange&, const RowRange&) = default;
};

// ranks + 1 element offsets into the concatenation: rank r owns [bounds[r], bounds[r + 1]).
std::vector<std::int64_t> shard_bounds(const std::vector<Shape>& shapes, int ranks);
// The rows of tensor `index` inside rank r's block (empty when the block misses it).
RowRange shard_rows(const std::vector<Shape>& shapes, const std::vector<std::int64_t>& bounds, std::size_t index, int rank);
// Rank r's rows of every tensor.
std::vector<RowRange> shard_rows(const std::vector<Shape>& shapes, int ranks, int rank);

}  // namespace moerun
