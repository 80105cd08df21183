#include "checkpoint/checkpoint_reader.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "checkpoint/format.h"

namespace moerun::ckpt {

namespace fs = std::filesystem;

std::string resolve_checkpoint(const std::string& dir_or_file) {
  fs::path p(dir_or_file);
  MOERUN_CHECK(fs::exists(p), CheckpointError, "[resume] '{}' does not exist; give a checkpoint file, a checkpoints "
               "directory, or a run directory", dir_or_file);
  if (fs::is_regular_file(p)) return p.string();
  if (fs::exists(p / "checkpoints" / "latest")) p /= "checkpoints";
  std::ifstream latest(p / "latest");
  MOERUN_CHECK(latest.good(), CheckpointError, "[resume] '{}' has no 'latest' file: no checkpoint was completed there",
               p.string());
  std::string name;
  latest >> name;
  const fs::path file = p / name;
  MOERUN_CHECK(fs::exists(file), CheckpointError, "[resume] '{}/latest' names '{}', which does not exist", p.string(), name);
  return file.string();
}

CheckpointReader::CheckpointReader(const std::string& path) : path_(path) {
  h5::silence_hdf5_errors();
  MOERUN_CHECK(fs::exists(path), CheckpointError, "[checkpoint] '{}' does not exist", path);
  MOERUN_CHECK(H5Fis_hdf5(path.c_str()) > 0, CheckpointError,
               "[checkpoint] '{}' is not an HDF5 file (truncated or corrupt?); use an earlier checkpoint", path);
  file_ = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  MOERUN_CHECK(static_cast<bool>(file_), CheckpointError,
               "[checkpoint] cannot open '{}' (truncated or corrupt?); use an earlier checkpoint", path);
  MOERUN_CHECK(has_attribute("format") && string_attribute("format") == kFormatName, CheckpointError,
               "[checkpoint] '{}' is not a moerun checkpoint (attribute format = '{}', expected '{}')", path,
               has_attribute("format") ? string_attribute("format") : "", kFormatName);
  const std::int64_t version = int_attribute("format_version");
  MOERUN_CHECK(version <= kFormatVersion, CheckpointError,
               "[checkpoint] '{}' has format version {}, newer than this moerun reads ({}); use a newer moerun", path,
               version, kFormatVersion);
}

bool CheckpointReader::has_attribute(const std::string& name) const { return H5Aexists(file_.id(), name.c_str()) > 0; }

std::int64_t CheckpointReader::int_attribute(const std::string& name) const {
  MOERUN_CHECK(has_attribute(name), CheckpointError, "[checkpoint] '{}' lacks attribute '{}'", path_, name);
  return h5::read_int_attribute(file_.id(), name);
}

std::string CheckpointReader::string_attribute(const std::string& name) const {
  MOERUN_CHECK(has_attribute(name), CheckpointError, "[checkpoint] '{}' lacks attribute '{}'", path_, name);
  return h5::read_string_attribute(file_.id(), name);
}

std::vector<std::string> CheckpointReader::attribute_names() const {
  std::vector<std::string> names;
  H5Aiterate2(file_.id(), H5_INDEX_NAME, H5_ITER_INC, nullptr,
              [](hid_t, const char* name, const H5A_info_t*, void* out) -> herr_t {
                static_cast<std::vector<std::string>*>(out)->push_back(name);
                return 0;
              },
              &names);
  return names;
}

std::vector<DatasetInfo> CheckpointReader::datasets() const {
  struct Walk {
    const CheckpointReader* self;
    std::vector<DatasetInfo> out;
  } walk{this, {}};
  H5Ovisit(file_.id(), H5_INDEX_NAME, H5_ITER_INC,
           [](hid_t, const char* name, const H5O_info_t* info, void* data) -> herr_t {
             if (info->type != H5O_TYPE_DATASET) return 0;
             auto* w = static_cast<Walk*>(data);
             const std::string path = std::string("/") + name;
             h5::Handle ds = h5::dataset(H5Dopen2(w->self->file_.id(), path.c_str(), H5P_DEFAULT));
             w->out.push_back({path, w->self->shape(path), H5Aexists(ds.id(), "crc32_rows") > 0});
             return 0;
           },
           &walk);
  return walk.out;
}

bool CheckpointReader::has(const std::string& dataset) const {
  // Every intermediate group must exist before H5Lexists may be asked about the leaf.
  std::string prefix;
  std::size_t at = 1;
  while (true) {
    const std::size_t next = dataset.find('/', at);
    prefix = dataset.substr(0, next);
    if (H5Lexists(file_.id(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (next == std::string::npos) return true;
    at = next + 1;
  }
}

Shape CheckpointReader::shape(const std::string& dataset) const {
  MOERUN_CHECK(has(dataset), CheckpointError, "[checkpoint] '{}' has no dataset '{}'", path_, dataset);
  h5::Handle ds = h5::dataset(h5::check(H5Dopen2(file_.id(), dataset.c_str(), H5P_DEFAULT), "H5Dopen2", dataset));
  h5::Handle space = h5::dataspace(H5Dget_space(ds.id()));
  const int rank = H5Sget_simple_extent_ndims(space.id());
  std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(0, rank)));
  H5Sget_simple_extent_dims(space.id(), dims.data(), nullptr);
  return Shape(dims.begin(), dims.end());
}

std::vector<float> CheckpointReader::read_selection(const std::string& dataset, std::optional<std::int64_t> row) const {
  const Shape full = shape(dataset);
  h5::Handle ds = h5::dataset(h5::check(H5Dopen2(file_.id(), dataset.c_str(), H5P_DEFAULT), "H5Dopen2", dataset));
  h5::Handle file_space = h5::dataspace(H5Dget_space(ds.id()));
  std::vector<hsize_t> count(full.begin(), full.end());
  if (row) {
    MOERUN_CHECK(!full.empty() && *row >= 0 && *row < full[0], CheckpointError,
                 "[checkpoint] '{}': row {} of '{}' does not exist (it has {} rows); the model has more experts than the "
                 "checkpoint",
                 path_, *row, dataset, full.empty() ? 0 : full[0]);
    std::vector<hsize_t> start(count.size(), 0);
    start[0] = static_cast<hsize_t>(*row);
    count[0] = 1;
    H5Sselect_hyperslab(file_space.id(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
  }
  hsize_t n = 1;
  for (hsize_t c : count) n *= c;
  std::vector<float> out(n);
  h5::Handle mem = h5::dataspace(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr));
  h5::check(H5Dread(ds.id(), H5T_NATIVE_FLOAT, mem.id(), file_space.id(), H5P_DEFAULT, out.data()), "H5Dread",
            dataset + " in " + path_ + " (truncated file?)");
  // Checksum of what was read.
  const std::uint32_t got = crc32_of(out.data(), out.size() * sizeof(float));
  std::uint32_t want = 0;
  if (row) {
    h5::Handle attr = h5::attribute(h5::check(H5Aopen(ds.id(), "crc32_rows", H5P_DEFAULT), "H5Aopen", dataset + "/crc32_rows"));
    std::vector<std::uint32_t> rows(static_cast<std::size_t>(full[0]));
    h5::check(H5Aread(attr.id(), H5T_NATIVE_UINT32, rows.data()), "H5Aread", dataset + "/crc32_rows");
    want = rows[static_cast<std::size_t>(*row)];
  } else {
    h5::Handle attr = h5::attribute(h5::check(H5Aopen(ds.id(), "crc32", H5P_DEFAULT), "H5Aopen", dataset + "/crc32"));
    std::int64_t v = 0;
    h5::check(H5Aread(attr.id(), H5T_NATIVE_INT64, &v), "H5Aread", dataset + "/crc32");
    want = static_cast<std::uint32_t>(v);
  }
  MOERUN_CHECK(got == want, CheckpointError,
               "[checkpoint] checksum failed for '{}'{} in '{}' (stored {:08x}, computed {:08x}): the file is corrupt; "
               "resume from an earlier checkpoint",
               dataset, row ? fmt::format(" row {}", *row) : std::string(), path_, want, got);
  return out;
}

std::vector<float> CheckpointReader::read(const std::string& dataset) const { return read_selection(dataset, std::nullopt); }

std::vector<float> CheckpointReader::read_row(const std::string& dataset, std::int64_t row) const {
  return read_selection(dataset, row);
}

std::string CheckpointReader::verify(const std::string& dataset) const {
  try {
    read(dataset);
    return "";
  } catch (const Error& e) {
    // A stacked dataset has a checksum per expert row: name the rows that fail.
    h5::Handle ds = h5::dataset(h5::check(H5Dopen2(file_.id(), dataset.c_str(), H5P_DEFAULT), "H5Dopen2", dataset));
    if (H5Aexists(ds.id(), "crc32_rows") <= 0) return e.what();
    std::vector<std::int64_t> bad;
    for (std::int64_t row = 0; row < shape(dataset)[0]; ++row) {
      try {
        read_row(dataset, row);
      } catch (const Error&) {
        bad.push_back(row);
      }
    }
    return fmt::format("{} (expert row(s) {} fail their own checksums)", e.what(), fmt::join(bad, ", "));
  }
}

}  // namespace moerun::ckpt
