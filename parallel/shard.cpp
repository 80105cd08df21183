#include "parallel/shard.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"

namespace moerun {
namespace {

std::int64_t row_width(const Shape& shape) {
  const std::int64_t rows = shape.empty() ? 1 : shape[0];
  return rows > 0 ? shape_numel(shape) / rows : 1;
}

}  // namespace

std::vector<std::int64_t> shard_bounds(const std::vector<Shape>& shapes, int ranks) {
  MOERUN_CHECK(ranks >= 1, RuntimeError, "[shard] {} ranks", ranks);
  std::vector<std::int64_t> offsets = {0};
  for (const Shape& s : shapes) offsets.push_back(offsets.back() + shape_numel(s));
  const std::int64_t total = offsets.back();
  std::vector<std::int64_t> bounds(static_cast<std::size_t>(ranks) + 1, 0);
  bounds.back() = total;
  std::size_t t = 0;  // the tensor holding the cut; cuts only move forward
  for (int r = 1; r < ranks; ++r) {
    const std::int64_t target = total * r / ranks;
    while (t + 1 < shapes.size() && offsets[t + 1] <= target) ++t;
    std::int64_t cut = total;
    if (t < shapes.size() && target < total) {
      const double width = double(row_width(shapes[t]));
      const auto row = static_cast<std::int64_t>(std::llround(double(target - offsets[t]) / width));
      cut = offsets[t] + row * row_width(shapes[t]);
    }
    bounds[static_cast<std::size_t>(r)] = std::clamp(cut, bounds[static_cast<std::size_t>(r) - 1], total);
  }
  return bounds;
}

RowRange shard_rows(const std::vector<Shape>& shapes, const std::vector<std::int64_t>& bounds, std::size_t index, int rank) {
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < index; ++i) offset += shape_numel(shapes[i]);
  const std::int64_t numel = shape_numel(shapes[index]), width = row_width(shapes[index]);
  const std::int64_t lo = std::max(offset, bounds[static_cast<std::size_t>(rank)]);
  const std::int64_t hi = std::min(offset + numel, bounds[static_cast<std::size_t>(rank) + 1]);
  if (lo >= hi) return {};
  MOERUN_CHECK((lo - offset) % width == 0 && (hi - offset) % width == 0, RuntimeError,
               "[shard] a cut falls inside a row of tensor {} ({}): bounds must sit on row boundaries", index,
               shape_string(shapes[index]));
  return {(lo - offset) / width, (hi - offset) / width};
}

std::vector<RowRange> shard_rows(const std::vector<Shape>& shapes, int ranks, int rank) {
  const auto bounds = shard_bounds(shapes, ranks);
  std::vector<RowRange> out;
  for (std::size_t i = 0; i < shapes.size(); ++i) out.push_back(shard_rows(shapes, bounds, i, rank));
  return out;
}

}  // namespace moerun
