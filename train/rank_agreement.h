// Every rank of a job must train the same thing: same program, same resolved config. An MPMD
// launch (`mpirun -np 2 moerun --set a=1 : -np 2 moerun --set a=2`) or a stale binary on one
// node would otherwise train silently inconsistent replicas. At start-up every rank compares a
// digest of its program version and config with rank 0's; a mismatch ends the job before
// training, naming the keys (or the version) that differ. Collective over the world.
#pragma once

#include "parallel/process_group.h"
#include "train/config.h"

namespace moerun {

// This build's identity: version and build time.
const char* program_version();

void check_ranks_agree(ProcessGroup& world, const Config& config);

}  // namespace moerun
