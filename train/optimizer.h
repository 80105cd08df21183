// AdamW over the parameter store, with its moments, and the learning-rate schedule (linear
// warm-up, then cosine decay to lr * min_lr_ratio). Weight decay applies to matrices only.
// Under ZeRO-1 a rank keeps moments for, and updates, only its own rows of each parameter
// (rows_of); the other rows arrive from their owners (GradSync::gather_parameters).
#pragma once

#include <functional>
#include <map>
#include <string>

#include "parallel/shard.h"
#include "runtime/parameters.h"
#include "train/config.h"

namespace moerun {

double learning_rate(const TrainConfig& train, std::int64_t step);  // step is 1-based

class AdamW {
 public:
  // The rows of a parameter this rank updates; empty function = all rows of every parameter.
  using RowsOf = std::function<RowRange(const Parameter&)>;
  AdamW(const TrainConfig& train, ParameterStore& params, const RowsOf& rows_of = {});
  // One update of the owned rows of every parameter from their gradient; `step` is the
  // 1-based optimizer step.
  void step(std::int64_t step, double lr);

  struct Moments {
    Tensor m, v;     // [rows.rows(), ...]: the moments of those rows of the parameter
    RowRange rows;
  };
  Moments& moments(const std::string& name) { return moments_.at(name); }
  // Experts that arrive on or leave this rank bring or take their moments (of `rows` of a
  // parameter of `shape`).
  Moments& add_moments(const std::string& name, const Shape& shape, RowRange rows);
  void drop_moments(const std::string& name) { moments_.erase(name); }
  // Elements of every moment tensor held here (m and v).
  std::int64_t state_elements() const;

 private:
  const TrainConfig& train_;
  ParameterStore& params_;
  std::map<std::string, Moments> moments_;
};

}  // namespace moerun
