#include "checkpoint/checkpoint_writer.h"

#include <sys/statvfs.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "checkpoint/format.h"
#include "checkpoint/hdf5_handles.h"
#include "runtime/human_bytes.h"
#include "parallel/watchdog.h"

namespace moerun::ckpt {

namespace fs = std::filesystem;

namespace {

// Forces a file's (or a directory's) data to stable storage: a checkpoint must survive the
// machine going down, not only the process.
void sync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  MOERUN_CHECK(fd >= 0, CheckpointError, "[checkpoint] cannot open '{}' to flush it", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  MOERUN_CHECK(rc == 0, CheckpointError, "[checkpoint] fsync of '{}' failed; is the disk full?", path);
}

std::int64_t row_elements(const DatasetSpec& spec) {
  std::int64_t n = 1;
  for (std::size_t i = spec.stacked ? 1 : 0; i < spec.shape.size(); ++i) n *= spec.shape[i];
  return n;
}

void write_u32_array_attribute(hid_t object, const std::string& name, const std::vector<std::uint32_t>& values) {
  const hsize_t n = values.size();
  h5::Handle space = h5::dataspace(H5Screate_simple(1, &n, nullptr));
  h5::Handle attr = h5::attribute(h5::check(
      H5Acreate2(object, name.c_str(), H5T_NATIVE_UINT32, space.id(), H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2", name));
  h5::check(H5Awrite(attr.id(), H5T_NATIVE_UINT32, values.data()), "H5Awrite", name);
}

// Test hook: MOERUN_TEST_CRASH_IN_CHECKPOINT="<step>:<rank>" kills that rank half-way through
// writing that step's checkpoint, to prove that a crash leaves the previous one readable.
void maybe_crash(std::int64_t step, int rank) {
  const char* spec = std::getenv("MOERUN_TEST_CRASH_IN_CHECKPOINT");
  if (spec == nullptr) return;
  long s = -1, r = -1;
  if (std::sscanf(spec, "%ld:%ld", &s, &r) == 2 && s == step && r == rank) {
    std::fprintf(stderr, "[rank %d] MOERUN_TEST_CRASH_IN_CHECKPOINT: dying while writing step %ld\n", rank, s);
    std::_Exit(9);
  }
}

// Bytes free for this process in the file system holding `dir`.
std::int64_t free_bytes(const std::string& dir) {
  struct statvfs fs_info {};
  if (statvfs(dir.c_str(), &fs_info) != 0) return std::numeric_limits<std::int64_t>::max();
  return static_cast<std::int64_t>(fs_info.f_bavail) * static_cast<std::int64_t>(fs_info.f_frsize);
}

// The file's size, about: the tensors, their checksums and HDF5's metadata, with a margin.
std::int64_t bytes_needed(const CheckpointContent& content) {
  std::int64_t bytes = 1 << 20;
  for (const DatasetSpec& d : content.datasets) bytes += shape_numel(d.shape) * 4 + 4096;
  for (const auto& [name, value] : content.string_attributes) bytes += static_cast<std::int64_t>(value.size());
  return bytes;
}

}  // namespace

std::string write_checkpoint(ProcessGroup& world, MPI_Comm comm, const std::string& dir, std::int64_t step,
                             const CheckpointContent& content, int keep) {
  h5::silence_hdf5_errors();
  const watchdog::Scope watch("the collective checkpoint write", dir);  // MPI-IO inside HDF5
  const std::string final_path = (fs::path(dir) / file_name(step)).string();
  const std::string tmp_path = final_path + ".tmp";
  if (world.rank() == 0) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    MOERUN_CHECK(!ec, CheckpointError, "[checkpoint] cannot create '{}': {}", dir, ec.message());
  }
  // Space first: a checkpoint that cannot fit is refused before a byte is written, on every
  // rank alike, and the previous one stays as it is.
  const std::int64_t needed = bytes_needed(content);
  const std::int64_t available = world.all_reduce_value(world.rank() == 0 ? free_bytes(dir) : std::int64_t{0});
  MOERUN_CHECK(needed <= available, CheckpointError,
               "[checkpoint] no space left for step {} in '{}': it needs about {} but {} are free; free some space "
               "(older runs, a smaller checkpoint.keep) or use a --run-dir on a larger file system. The previous "
               "checkpoint and `latest` are untouched",
               step, dir, human_bytes(double(needed)), human_bytes(double(available)));
  // Checksums: one slot per row (stacked) or per dense tensor. Each piece's CRC is shared with
  // every rank as (slot, first row, crc, bytes); a slot's CRC combines its pieces in row order.
  std::vector<std::size_t> first_slot(content.datasets.size());
  std::size_t slots = 0;
  for (std::size_t i = 0; i < content.datasets.size(); ++i) {
    first_slot[i] = slots;
    slots += content.datasets[i].stacked ? static_cast<std::size_t>(content.datasets[i].shape[0]) : 1;
  }
  std::vector<std::vector<float>> host(content.pieces.size());
  std::vector<std::int64_t> records;
  for (std::size_t k = 0; k < content.pieces.size(); ++k) {
    const Piece& p = content.pieces[k];
    const DatasetSpec& spec = content.datasets[p.dataset];
    host[k] = p.tensor->to_host();
    const std::int64_t rows_in_slot = spec.shape.at(spec.stacked ? 1 : 0);
    const std::int64_t width = row_elements(spec) / std::max<std::int64_t>(1, rows_in_slot);
    const std::int64_t rows = static_cast<std::int64_t>(host[k].size()) / std::max<std::int64_t>(1, width);
    MOERUN_CHECK(rows * width == static_cast<std::int64_t>(host[k].size()) && p.first_row >= 0 &&
                     p.first_row + rows <= rows_in_slot,
                 CheckpointError, "[checkpoint] a piece of {} holds {} values from row {}, which is not whole rows of {}",
                 spec.path, host[k].size(), p.first_row, shape_string(spec.shape));
    records.insert(records.end(), {static_cast<std::int64_t>(first_slot[p.dataset]) + std::max<std::int64_t>(0, p.row),
                                   p.first_row, crc32_of(host[k].data(), host[k].size() * sizeof(float)),
                                   static_cast<std::int64_t>(host[k].size() * sizeof(float))});
  }
  const std::int64_t most = world.all_reduce_value(static_cast<std::int64_t>(content.pieces.size()), ReduceOp::Max);
  records.resize(static_cast<std::size_t>(4 * most), -1);  // padding records have slot -1
  std::vector<std::int64_t> all(records.size() * static_cast<std::size_t>(world.size()));
  world.all_gather(records, all);
  std::vector<std::vector<std::array<std::int64_t, 3>>> parts(slots);  // per slot: (first row, crc, bytes)
  for (std::size_t i = 0; i + 3 < all.size(); i += 4)
    if (all[i] >= 0) parts[static_cast<std::size_t>(all[i])].push_back({all[i + 1], all[i + 2], all[i + 3]});
  std::vector<std::uint32_t> crc(slots, 0);
  for (std::size_t s = 0; s < slots; ++s) {
    std::sort(parts[s].begin(), parts[s].end());
    for (std::size_t j = 0; j < parts[s].size(); ++j) {
      const auto piece_crc = static_cast<std::uint32_t>(parts[s][j][1]);
      crc[s] = j == 0 ? piece_crc : crc32_combine_parts(crc[s], piece_crc, static_cast<std::size_t>(parts[s][j][2]));
    }
  }

  try {
    h5::Handle fapl = h5::plist(H5Pcreate(H5P_FILE_ACCESS));
    if (comm != MPI_COMM_NULL) h5::check(H5Pset_fapl_mpio(fapl.id(), comm, MPI_INFO_NULL), "H5Pset_fapl_mpio", tmp_path);
    // The 1.8 object headers store attributes above 64 KiB densely (the load history of a
    // fine-grained model: 64 experts x 4 layers x the window, as JSON, is larger); the 1.6
    // default refuses them. Readable by HDF5 1.8 and later (h5py included).
    h5::check(H5Pset_libver_bounds(fapl.id(), H5F_LIBVER_V18, H5F_LIBVER_LATEST), "H5Pset_libver_bounds", tmp_path);
    h5::Handle file = h5::file(h5::check(H5Fcreate(tmp_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id()), "H5Fcreate",
                                         tmp_path + " (is the directory writable and on a file system MPI-IO can use?)"));
    h5::Handle lcpl = h5::plist(H5Pcreate(H5P_LINK_CREATE));
    H5Pset_create_intermediate_group(lcpl.id(), 1);
    std::vector<h5::Handle> datasets;
    for (const DatasetSpec& spec : content.datasets) {
      std::vector<hsize_t> dims(spec.shape.begin(), spec.shape.end());
      h5::Handle space = h5::dataspace(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
      datasets.push_back(h5::dataset(h5::check(
          H5Dcreate2(file.id(), spec.path.c_str(), H5T_IEEE_F32LE, space.id(), lcpl.id(), H5P_DEFAULT, H5P_DEFAULT),
          "H5Dcreate2", spec.path)));
    }
    for (std::size_t k = 0; k < content.pieces.size(); ++k) {
      const Piece& p = content.pieces[k];
      const DatasetSpec& spec = content.datasets[p.dataset];
      hid_t ds = datasets[p.dataset].id();
      h5::Handle file_space = h5::dataspace(H5Dget_space(ds));
      std::vector<hsize_t> dims(spec.shape.begin(), spec.shape.end());
      // The piece's rows: along dimension 0, or along dimension 1 inside its expert row.
      std::vector<hsize_t> start(dims.size(), 0), count = dims;
      const std::size_t row_dim = spec.stacked ? 1 : 0;
      if (spec.stacked) {
        start[0] = static_cast<hsize_t>(p.row);
        count[0] = 1;
      }
      if (row_dim < dims.size()) {
        const hsize_t width = static_cast<hsize_t>(row_elements(spec)) / std::max<hsize_t>(1, dims[row_dim]);
        start[row_dim] = static_cast<hsize_t>(p.first_row);
        count[row_dim] = static_cast<hsize_t>(host[k].size()) / std::max<hsize_t>(1, width);
      }
      H5Sselect_hyperslab(file_space.id(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
      dims = count;
      h5::Handle mem_space = h5::dataspace(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
      h5::check(H5Dwrite(ds, H5T_NATIVE_FLOAT, mem_space.id(), file_space.id(), H5P_DEFAULT, host[k].data()), "H5Dwrite",
                spec.path);
      if (k == content.pieces.size() / 2) maybe_crash(step, world.rank());
    }
    // Attributes are collective in parallel HDF5: every rank writes the same values.
    for (std::size_t i = 0; i < content.datasets.size(); ++i) {
      const DatasetSpec& spec = content.datasets[i];
      const std::size_t rows = spec.stacked ? static_cast<std::size_t>(spec.shape[0]) : 1;
      const std::size_t row_bytes = static_cast<std::size_t>(row_elements(spec)) * sizeof(float);
      std::vector<std::uint32_t> row_crc(rows);
      std::uint32_t whole = crc32_of(nullptr, 0);
      for (std::size_t r = 0; r < rows; ++r) {
        row_crc[r] = crc[first_slot[i] + r];
        whole = r == 0 ? row_crc[r] : crc32_combine_parts(whole, row_crc[r], row_bytes);
      }
      h5::write_int_attribute(datasets[i].id(), "crc32", whole);
      if (spec.stacked) write_u32_array_attribute(datasets[i].id(), "crc32_rows", row_crc);
    }
    for (const auto& [name, value] : content.int_attributes) h5::write_int_attribute(file.id(), name, value);
    for (const auto& [name, value] : content.string_attributes) h5::write_string_attribute(file.id(), name, value);
    datasets.clear();
    h5::check(file.close(), "H5Fclose", tmp_path + " (flushing the file)");  // collective: all data is on disk after it
    world.barrier();
  } catch (const std::exception& e) {
    // A failed write (no space, an I/O error, permissions) leaves no half file behind; the
    // previous checkpoint and `latest` were never touched. The job ends on this error.
    std::error_code ignored;
    fs::remove(tmp_path, ignored);
    const std::int64_t left = free_bytes(dir);
    MOERUN_THROW(CheckpointError, "[checkpoint] writing step {} to '{}' failed{} ({} free, about {} needed): {}. The "
                 "previous checkpoint and `latest` are untouched", step, tmp_path,
                 left < needed ? ": no space left on the device" : "", human_bytes(double(left)), human_bytes(double(needed)), e.what());
  }
  if (world.rank() == 0) {
    sync_path(tmp_path);
    fs::rename(tmp_path, final_path);
    const std::string latest = (fs::path(dir) / "latest").string();
    {
      std::ofstream out(latest + ".tmp");
      out << file_name(step) << "\n";
      out.flush();
      MOERUN_CHECK(out.good(), CheckpointError, "[checkpoint] cannot write '{}.tmp'", latest);
    }
    sync_path(latest + ".tmp");
    fs::rename(latest + ".tmp", latest);  // `latest` moves only after the file is complete and on disk
    sync_path(dir);
    std::vector<std::int64_t> steps;
    for (const auto& entry : fs::directory_iterator(dir))
      if (auto s = step_of_file(entry.path().filename().string())) steps.push_back(*s);
    std::sort(steps.rbegin(), steps.rend());
    // The newest `keep` by step number, and never the file just written (the one `latest`
    // names), even when older runs left higher step numbers in the directory.
    for (std::size_t i = static_cast<std::size_t>(std::max(1, keep)); i < steps.size(); ++i)
      if (steps[i] != step) fs::remove(fs::path(dir) / file_name(steps[i]));
  }
  world.barrier();
  return final_path;
}

}  // namespace moerun::ckpt
