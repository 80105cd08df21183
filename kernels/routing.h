// The integer bookkeeping of MoE routing, on the device: where each token-copy goes (the
// capacity cut, the split over replicas, the send buffer's rows and block labels) and the
// copies per expert that the balancing loss needs. On the device so that static shapes need no
// host round trip per layer (docs/device.md); DispatchLayoutArgs says the layouts.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void dispatch_layout(const DispatchLayoutArgs& args);
void expert_counts(const ExpertCountsArgs& args);

}  // namespace moerun::kernels
