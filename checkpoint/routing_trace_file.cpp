#include "checkpoint/routing_trace_file.h"

#include <hdf5.h>

#include <algorithm>
#include <array>
#include <filesystem>

#include "checkpoint/hdf5_handles.h"
#include "runtime/error.h"

namespace moerun::ckpt {

namespace {
constexpr const char* kFormat = "moerun-routing-trace";
constexpr std::int64_t kVersion = 1;

// An extendable int64 dataset [0, dims...] chunked by a few steps (at most ~1 MiB a chunk) and
// compressed: counts repeat and compress well.
h5::Handle create_series(hid_t file, const char* name, std::vector<hsize_t> row) {
  std::vector<hsize_t> dims{0}, max{H5S_UNLIMITED}, chunk{1};
  hsize_t row_elements = 1;
  for (hsize_t d : row) {
    dims.push_back(d);
    max.push_back(d);
    chunk.push_back(d);
    row_elements *= std::max<hsize_t>(1, d);
  }
  chunk[0] = std::clamp<hsize_t>((hsize_t(1) << 17) / row_elements, 1, 64);
  h5::Handle space = h5::dataspace(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), max.data()));
  h5::Handle dcpl = h5::plist(H5Pcreate(H5P_DATASET_CREATE));
  h5::check(H5Pset_chunk(dcpl.id(), static_cast<int>(chunk.size()), chunk.data()), "H5Pset_chunk", name);
  h5::check(H5Pset_deflate(dcpl.id(), 4), "H5Pset_deflate", name);
  return h5::dataset(h5::check(H5Dcreate2(file, name, H5T_STD_I64LE, space.id(), H5P_DEFAULT, dcpl.id(), H5P_DEFAULT),
                               "H5Dcreate2", name));
}

// Appends one row (all dimensions after the first) at index `at`.
void append_row(hid_t dataset, std::int64_t at, const std::int64_t* values, const char* name) {
  h5::Handle space = h5::dataspace(H5Dget_space(dataset));
  const int rank = H5Sget_simple_extent_ndims(space.id());
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  H5Sget_simple_extent_dims(space.id(), dims.data(), nullptr);
  dims[0] = static_cast<hsize_t>(at + 1);
  h5::check(H5Dset_extent(dataset, dims.data()), "H5Dset_extent", name);
  h5::Handle file_space = h5::dataspace(H5Dget_space(dataset));
  std::vector<hsize_t> start(dims.size(), 0), count = dims;
  start[0] = static_cast<hsize_t>(at);
  count[0] = 1;
  h5::check(H5Sselect_hyperslab(file_space.id(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
            "H5Sselect_hyperslab", name);
  h5::Handle memory = h5::dataspace(H5Screate_simple(rank, count.data(), nullptr));
  h5::check(H5Dwrite(dataset, H5T_NATIVE_INT64, memory.id(), file_space.id(), H5P_DEFAULT, values), "H5Dwrite", name);
}

std::int64_t int_attribute(hid_t file, const char* name, const std::string& path) {
  MOERUN_CHECK(H5Aexists(file, name) > 0, CheckpointError, "[routing trace] '{}' has no attribute '{}'; is it a routing "
               "trace written by moerun (log.routing_trace = true)?", path, name);
  return h5::read_int_attribute(file, name);
}

std::string string_attribute(hid_t file, const char* name) {
  return H5Aexists(file, name) > 0 ? h5::read_string_attribute(file, name) : "";
}

std::vector<std::int64_t> read_all(hid_t file, const char* name, std::int64_t elements, const std::string& path) {
  h5::Handle dataset = h5::dataset(h5::check(H5Dopen2(file, name, H5P_DEFAULT), "H5Dopen2", path + ": " + name));
  std::vector<std::int64_t> values(static_cast<std::size_t>(elements));
  if (elements > 0)
    h5::check(H5Dread(dataset.id(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), "H5Dread", path);
  return values;
}
}  // namespace

struct RoutingTraceWriter::Impl {
  h5::Handle file, step, routed, kept;
};

RoutingTraceWriter::RoutingTraceWriter(const std::string& path, const RoutingTraceShape& shape)
    : impl_(std::make_unique<Impl>()), path_(path), shape_(shape) {
  h5::silence_hdf5_errors();
  impl_->file = h5::file(h5::check(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "H5Fcreate",
                                   "routing trace " + path));
  const hid_t f = impl_->file.id();
  h5::write_string_attribute(f, "format", kFormat);
  h5::write_int_attribute(f, "version", kVersion);
  for (const auto& [name, value] : std::array<std::pair<const char*, std::int64_t>, 7>{
           {{"layers", shape.layers}, {"ranks", shape.ranks}, {"experts", shape.experts}, {"top_k", shape.top_k},
            {"dp", shape.dp}, {"ep", shape.ep}, {"tokens_per_step", shape.tokens_per_step}}})
    h5::write_int_attribute(f, name, value);
  h5::write_string_attribute(f, "config", shape.config_json);
  const auto l = static_cast<hsize_t>(shape.layers), r = static_cast<hsize_t>(shape.ranks),
             e = static_cast<hsize_t>(shape.experts);
  impl_->step = create_series(f, "step", {});
  impl_->routed = create_series(f, "routed", {l, r, e});
  impl_->kept = create_series(f, "kept", {l, e});
}

RoutingTraceWriter::~RoutingTraceWriter() = default;

void RoutingTraceWriter::append(std::int64_t step, std::span<const std::int64_t> routed,
                                std::span<const std::int64_t> kept) {
  MOERUN_CHECK(std::int64_t(routed.size()) == shape_.layers * shape_.ranks * shape_.experts &&
                   std::int64_t(kept.size()) == shape_.layers * shape_.experts,
               CheckpointError, "[routing trace] step {}: {} routed and {} kept counts for {} layers x {} ranks x {} experts",
               step, routed.size(), kept.size(), shape_.layers, shape_.ranks, shape_.experts);
  append_row(impl_->step.id(), steps_, &step, "step");
  append_row(impl_->routed.id(), steps_, routed.data(), "routed");
  append_row(impl_->kept.id(), steps_, kept.data(), "kept");
  ++steps_;
  h5::check(H5Fflush(impl_->file.id(), H5F_SCOPE_LOCAL), "H5Fflush", path_);
}

RoutingTrace read_routing_trace(const std::string& path) {
  h5::silence_hdf5_errors();
  MOERUN_CHECK(std::filesystem::is_regular_file(path), CheckpointError,
               "[routing trace] '{}' does not exist; traces are written to <run-dir>/routing/ by runs with "
               "log.routing_trace = true", path);
  h5::Handle file = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  MOERUN_CHECK(bool(file), CheckpointError, "[routing trace] '{}' is not an HDF5 file (truncated or corrupt?)", path);
  const hid_t f = file.id();
  MOERUN_CHECK(string_attribute(f, "format") == kFormat, CheckpointError,
               "[routing trace] '{}' is not a moerun routing trace (its format attribute is '{}')", path,
               string_attribute(f, "format"));
  RoutingTrace t;
  t.shape = {int_attribute(f, "layers", path), int_attribute(f, "ranks", path), int_attribute(f, "experts", path),
             int_attribute(f, "top_k", path),  int_attribute(f, "dp", path),    int_attribute(f, "ep", path),
             int_attribute(f, "tokens_per_step", path), string_attribute(f, "config")};
  h5::Handle step = h5::dataset(h5::check(H5Dopen2(f, "step", H5P_DEFAULT), "H5Dopen2", path + ": step"));
  h5::Handle space = h5::dataspace(H5Dget_space(step.id()));
  hsize_t steps = 0;
  H5Sget_simple_extent_dims(space.id(), &steps, nullptr);
  const auto n = static_cast<std::int64_t>(steps);
  t.step = read_all(f, "step", n, path);
  t.routed = read_all(f, "routed", n * t.shape.layers * t.shape.ranks * t.shape.experts, path);
  t.kept = read_all(f, "kept", n * t.shape.layers * t.shape.experts, path);
  return t;
}

}  // namespace moerun::ckpt
