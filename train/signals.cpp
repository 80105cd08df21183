#include "train/signals.h"

#include <csignal>

namespace moerun {

namespace {
volatile std::sig_atomic_t g_requested = 0;  // the one piece of state a signal handler may touch
extern "C" void on_signal(int) { g_requested = 1; }
}  // namespace

void install_checkpoint_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

bool checkpoint_signal_received() { return g_requested != 0; }
void clear_checkpoint_signal() { g_requested = 0; }

}  // namespace moerun
