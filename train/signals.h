// SIGTERM and SIGUSR1 (what Slurm sends before the wall-clock limit) request a checkpoint: the
// trainer notices at its next step's packed all-reduce, finishes that step, writes a
// checkpoint and stops with exit code 0.
//
// The signals are blocked in every thread (block_checkpoint_signals runs first in main, before
// MPI and oneDNN start theirs, which inherit the mask) and taken synchronously with
// sigtimedwait at step boundaries, so no thread is ever interrupted to run a handler. Handled
// asynchronously, a signal that landed on a rank shortly after it had been stopped and resumed
// corrupted the heap inside the next oneDNN call (issue 14; tests/checkpoint/signal_stress.sh).
// A flag-setting handler stays installed for a thread that unblocks them on its own, so that
// such a thread never takes the default action (termination).
#pragma once

namespace moerun {

void block_checkpoint_signals();
// True once SIGTERM or SIGUSR1 has arrived (consumes pending ones; stays true).
bool checkpoint_signal_received();
void clear_checkpoint_signal();  // tests

}  // namespace moerun
