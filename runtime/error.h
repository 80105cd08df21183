// The one error type of moerun and its subsystem flavours.
// Owns: the exception hierarchy and the MOERUN_THROW/MOERUN_CHECK macros that stamp file and line.
// Does not own: how errors reach the user (the executables catch, print "[rank r] ..." and abort).
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace moerun {

enum class Subsystem { Runtime, Device, Kernel, Config, Data, Mpi, Hdf5, Checkpoint };

std::string_view subsystem_name(Subsystem s);

// Messages start with the operation and give the numbers, e.g.
// "[matmul] a is [3, 4] but b is [5, 2]: inner dimensions must agree".
class Error : public std::runtime_error {
 public:
  Error(Subsystem subsystem, const std::string& message, const char* file, int line);
  Subsystem subsystem() const { return subsystem_; }
  const char* file() const { return file_; }
  int line() const { return line_; }

 private:
  Subsystem subsystem_;
  const char* file_;
  int line_;
};

#define MOERUN_DEFINE_ERROR(Name, Sub)                                          \
  class Name : public Error {                                                   \
   public:                                                                      \
    Name(const std::string& message, const char* file, int line)                \
        : Error(Subsystem::Sub, message, file, line) {}                         \
  };
MOERUN_DEFINE_ERROR(RuntimeError, Runtime)
MOERUN_DEFINE_ERROR(DeviceError, Device)
MOERUN_DEFINE_ERROR(KernelError, Kernel)
MOERUN_DEFINE_ERROR(ConfigError, Config)
MOERUN_DEFINE_ERROR(DataError, Data)
MOERUN_DEFINE_ERROR(MpiError, Mpi)
MOERUN_DEFINE_ERROR(Hdf5Error, Hdf5)
MOERUN_DEFINE_ERROR(CheckpointError, Checkpoint)
#undef MOERUN_DEFINE_ERROR

}  // namespace moerun

// MOERUN_THROW(KernelError, "[matmul] ... {}", x): throws with fmt formatting, file and line.
#define MOERUN_THROW(Type, ...) throw ::moerun::Type(fmt::format(__VA_ARGS__), __FILE__, __LINE__)
// MOERUN_CHECK(cond, KernelError, "..."): throws when cond is false.
#define MOERUN_CHECK(cond, Type, ...)  \
  do {                                 \
    if (!(cond)) {                     \
      MOERUN_THROW(Type, __VA_ARGS__); \
    }                                  \
  } while (0)
