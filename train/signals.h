// SIGTERM and SIGUSR1 (what Slurm sends before the wall-clock limit) request a checkpoint: the
// handler only sets a flag; the trainer finishes the current step, agrees with the other ranks
// (all-reduce), writes a checkpoint and stops with exit code 0.
#pragma once

namespace moerun {

void install_checkpoint_signal_handlers();
bool checkpoint_signal_received();
void clear_checkpoint_signal();  // tests

}  // namespace moerun
