#include "train/signals.h"

#include <pthread.h>

#include <csignal>
#include <ctime>

namespace moerun {

namespace {
volatile std::sig_atomic_t g_requested = 0;  // the one piece of state a signal handler may touch
extern "C" void on_signal(int) { g_requested = 1; }

sigset_t checkpoint_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  return set;
}
}  // namespace

void block_checkpoint_signals() {
  const sigset_t set = checkpoint_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

bool checkpoint_signal_received() {
  const sigset_t set = checkpoint_signals();
  const timespec now{0, 0};
  while (sigtimedwait(&set, nullptr, &now) > 0) g_requested = 1;  // take every pending one
  return g_requested != 0;
}

void clear_checkpoint_signal() { g_requested = 0; }

}  // namespace moerun
