#include "checkpoint/state_content.h"

#include <algorithm>
#include <span>
#include <vector>

#include "runtime/error.h"

namespace moerun::ckpt {

ContentBuilder::ContentBuilder() {
  content_.string_attributes["format"] = kFormatName;
  content_.int_attributes["format_version"] = kFormatVersion;
}

void ContentBuilder::declare(Root root, const std::string& param, const Shape& shape, std::int64_t experts) {
  const DatasetRef ref = dataset_for(root, param);
  Shape full = shape;
  if (experts > 0) full.insert(full.begin(), experts);
  const auto [it, fresh] = index_of_.emplace(ref.path, content_.datasets.size());
  if (fresh) content_.datasets.push_back({ref.path, std::move(full), experts > 0});
}

void ContentBuilder::write(Root root, const std::string& param, const Tensor* tensor, std::int64_t first_row) {
  const DatasetRef ref = dataset_for(root, param);
  const auto it = index_of_.find(ref.path);
  MOERUN_CHECK(it != index_of_.end(), CheckpointError, "[checkpoint] '{}' is written but was never declared", ref.path);
  content_.pieces.push_back({it->second, ref.expert_row.value_or(-1), tensor, first_row});
}

void read_rows(const CheckpointReader& file, Root root, const std::string& param, const Shape& shape,
               std::int64_t experts, Tensor& into, std::int64_t first_row) {
  const DatasetRef ref = dataset_for(root, param);
  MOERUN_CHECK(file.has(ref.path), CheckpointError,
               "[resume] '{}' has no dataset '{}' for parameter '{}': it was written for a different model; resume "
               "with the config stored in it (moerun-ckpt info {})",
               file.path(), ref.path, param, file.path());
  Shape want = shape;
  if (ref.expert_row) want.insert(want.begin(), experts);
  const Shape have = file.shape(ref.path);
  MOERUN_CHECK(have == want, CheckpointError,
               "[resume] model shape differs: '{}' is {} in '{}' but the config gives {}; resume with the config "
               "stored in the checkpoint (moerun-ckpt info {}) or start a new run",
               ref.path, shape_string(have), file.path(), shape_string(want), file.path());
  const std::vector<float> all = ref.expert_row ? file.read_row(ref.path, *ref.expert_row) : file.read(ref.path);
  const std::int64_t width = shape_numel(shape) / std::max<std::int64_t>(1, shape.empty() ? 1 : shape.front());
  into.copy_from_host(std::span<const float>(all).subspan(static_cast<std::size_t>(first_row * width),
                                                          static_cast<std::size_t>(into.numel())));
}

}  // namespace moerun::ckpt
