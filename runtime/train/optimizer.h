// AdamW over the parameter store, with its moments, and the learning-rate schedule (linear
// warm-up, then cosine decay to lr * min_lr_ratio). Weight decay applies to matrices only.
#pragma once

#include <map>
#include <string>

#include "runtime/core/parameters.h"
#include "runtime/train/config.h"

namespace moerun {

double learning_rate(const TrainConfig& train, std::int64_t step);  // step is 1-based

class AdamW {
 public:
  AdamW(const TrainConfig& train, ParameterStore& params);
  // One update of every parameter from its gradient; `step` is the 1-based optimizer step.
  void step(std::int64_t step, double lr);

  struct Moments {
    Tensor m, v;
  };
  Moments& moments(const std::string& name) { return moments_.at(name); }
  // Experts that arrive on or leave this rank bring or take their moments.
  Moments& add_moments(const std::string& name, const Shape& shape);
  void drop_moments(const std::string& name) { moments_.erase(name); }

 private:
  const TrainConfig& train_;
  ParameterStore& params_;
  std::map<std::string, Moments> moments_;
};

}  // namespace moerun
