// Thin RAII owners of HDF5 identifiers and checked calls. Each handle type closes its id
// exactly once; every HDF5 call that can fail goes through check(), which turns a negative
// return into an Hdf5Error naming the call and the object. HDF5's own error printing is
// switched off (silence_hdf5_errors) so messages come from moerun, once.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <utility>

#include "runtime/error.h"

namespace moerun::h5 {

void silence_hdf5_errors();

[[noreturn]] void throw_hdf5_error(const char* call, const std::string& what);

// Throws Hdf5Error "[call] what: <HDF5's innermost message>" when status < 0.
template <class T>
T check(T status, const char* call, const std::string& what) {
  if (status < 0) throw_hdf5_error(call, what);
  return status;
}

class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), closer_(o.closer_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      closer_ = o.closer_;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t id() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && closer_ != nullptr) closer_(id_);
    id_ = H5I_INVALID_HID;
  }
  // Closes now and returns the closer's status (a file's close flushes it, and can fail).
  herr_t close() {
    const herr_t status = id_ >= 0 && closer_ != nullptr ? closer_(id_) : 0;
    id_ = H5I_INVALID_HID;
    return status;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// Scalar attributes on a file, group or dataset.
void write_int_attribute(hid_t object, const std::string& name, std::int64_t value);
void write_string_attribute(hid_t object, const std::string& name, const std::string& value);
// Reads of attributes that exist (callers check H5Aexists with their own message first).
std::int64_t read_int_attribute(hid_t object, const std::string& name);
std::string read_string_attribute(hid_t object, const std::string& name);

inline Handle file(hid_t id) { return Handle(id, H5Fclose); }
inline Handle group(hid_t id) { return Handle(id, H5Gclose); }
inline Handle dataset(hid_t id) { return Handle(id, H5Dclose); }
inline Handle dataspace(hid_t id) { return Handle(id, H5Sclose); }
inline Handle plist(hid_t id) { return Handle(id, H5Pclose); }
inline Handle attribute(hid_t id) { return Handle(id, H5Aclose); }
inline Handle datatype(hid_t id) { return Handle(id, H5Tclose); }

}  // namespace moerun::h5
