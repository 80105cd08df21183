#include "runtime/error.h"

namespace moerun {

std::string_view subsystem_name(Subsystem s) {
  switch (s) {
    case Subsystem::Runtime: return "runtime";
    case Subsystem::Device: return "device";
    case Subsystem::Kernel: return "kernel";
    case Subsystem::Config: return "config";
    case Subsystem::Data: return "data";
    case Subsystem::Mpi: return "mpi";
    case Subsystem::Hdf5: return "hdf5";
    case Subsystem::Checkpoint: return "checkpoint";
  }
  return "unknown";
}

Error::Error(Subsystem subsystem, const std::string& message, const char* file, int line)
    : std::runtime_error(message), subsystem_(subsystem), file_(file), line_(line) {}

}  // namespace moerun
