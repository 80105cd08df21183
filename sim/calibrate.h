// Calibration: a Hardware description of this machine, measured. Runs the real kernels through
// the device (GEMMs on a grid of shapes in fp32 and bf16, attention over sequence lengths,
// layer norm for memory-bound kernels, AdamW, a tiny kernel for the per-call cost) and MPI
// micro-benchmarks over the world (alpha-beta least-squares fits of all-to-all-v and
// all-reduce, and how much of an all-reduce hides behind compute). Collective: every rank
// measures at the same time, so the kernel rates are those of a rank sharing the node with
// the others, as in training.
#pragma once

#include <string>

#include "parallel/process_group.h"
#include "runtime/device.h"
#include "sim/hardware.h"

namespace moerun::sim {

struct CalibrateOptions {
  std::string name = "this machine";
  std::string description;
  bool quick = false;            // a coarser grid (tests): 3 x 2 x 2 GEMM shapes, 2 sequence lengths
  const Hardware* inter_node = nullptr;  // the inter-node link to copy (not measurable on one node)
};

// Rank 0's measurements (kernel rates: the median over ranks), identical on every rank.
Hardware calibrate(Device& device, ProcessGroup& world, const CalibrateOptions& options);

}  // namespace moerun::sim
