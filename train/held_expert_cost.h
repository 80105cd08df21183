// What holding one more expert costs a rank every step, apart from the token-copies it
// processes: its weights read and its weight gradients written in every micro-batch's forward
// and backward, and once per step its gradients zeroed, its compute copy refreshed and its
// AdamW update. The planner charges it for every replica it adds (CostModel::
// seconds_per_held_expert): without it, room for every expert on every rank made the planner
// replicate them all, and on a Zen 5 host each extra expert held cost ~38 ms a step.
//
// Measured through the device on the real FFN and optimizer code, with one token-copy per
// expert (the copies' own cost is the per-copy term's), over enough experts that their state
// does not stay in the last-level cache, as in training.
#pragma once

#include <cstdint>

#include "runtime/device.h"
#include "train/config.h"

namespace moerun {

// This rank's seconds per step for one held expert: the median of a few measured steps of
// `micro_batches` forward and backward passes and one optimizer update, over the probe's experts.
double measure_held_expert_seconds(const Config& config, Device& device, std::int64_t micro_batches);

}  // namespace moerun
