#include "checkpoint/hdf5_handles.h"

namespace moerun::h5 {

void silence_hdf5_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

namespace {
herr_t innermost(unsigned n, const H5E_error2_t* err, void* out) {
  if (n == 0) *static_cast<std::string*>(out) = err->desc ? err->desc : "";
  return 0;
}
}  // namespace

void throw_hdf5_error(const char* call, const std::string& what) {
  std::string detail;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, &detail);
  H5Eclear2(H5E_DEFAULT);
  throw Hdf5Error(fmt::format("[{}] {}{}{}", call, what, detail.empty() ? "" : ": ", detail), __FILE__, __LINE__);
}

}  // namespace moerun::h5
