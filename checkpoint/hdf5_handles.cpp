#include "checkpoint/hdf5_handles.h"

#include <algorithm>

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

void write_int_attribute(hid_t object, const std::string& name, std::int64_t value) {
  Handle space = dataspace(H5Screate(H5S_SCALAR));
  Handle attr =
      attribute(check(H5Acreate2(object, name.c_str(), H5T_NATIVE_INT64, space.id(), H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2", name));
  check(H5Awrite(attr.id(), H5T_NATIVE_INT64, &value), "H5Awrite", name);
}

void write_string_attribute(hid_t object, const std::string& name, const std::string& value) {
  Handle type = datatype(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.id(), std::max<std::size_t>(1, value.size()));
  H5Tset_strpad(type.id(), H5T_STR_NULLPAD);
  Handle space = dataspace(H5Screate(H5S_SCALAR));
  Handle attr =
      attribute(check(H5Acreate2(object, name.c_str(), type.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2", name));
  check(H5Awrite(attr.id(), type.id(), value.empty() ? "" : value.data()), "H5Awrite", name);
}

std::int64_t read_int_attribute(hid_t object, const std::string& name) {
  Handle attr = attribute(check(H5Aopen(object, name.c_str(), H5P_DEFAULT), "H5Aopen", name));
  std::int64_t value = 0;
  check(H5Aread(attr.id(), H5T_NATIVE_INT64, &value), "H5Aread", name);
  return value;
}

std::string read_string_attribute(hid_t object, const std::string& name) {
  Handle attr = attribute(check(H5Aopen(object, name.c_str(), H5P_DEFAULT), "H5Aopen", name));
  Handle type = datatype(H5Aget_type(attr.id()));
  std::string value(H5Tget_size(type.id()), '\0');
  check(H5Aread(attr.id(), type.id(), value.data()), "H5Aread", name);
  value.erase(std::find(value.begin(), value.end(), '\0'), value.end());
  return value;
}

}  // namespace moerun::h5
