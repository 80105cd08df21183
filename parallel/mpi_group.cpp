#include "parallel/mpi_group.h"

#include "parallel/watchdog.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <cstdio>
#include <vector>

#include "runtime/error.h"

namespace moerun {
namespace {

MPI_Datatype mpi_type(CommType t) {
  switch (t) {
    case CommType::F32: return MPI_FLOAT;
    case CommType::F64: return MPI_DOUBLE;
    case CommType::I32: return MPI_INT32_T;
    case CommType::I64: return MPI_INT64_T;
    case CommType::U8: return MPI_UINT8_T;
    case CommType::BF16: return MPI_UINT16_T;  // the bits; reductions use bf16_sum below
  }
  return MPI_DATATYPE_NULL;
}

// MPI has no bf16: a user-defined sum over the 16-bit patterns, each addition in fp32 and
// rounded to bf16 once (as NCCL's bf16 reductions do). Created on first use, freed by MPI at
// finalize.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const bfloat16*>(in);
  auto* b = static_cast<bfloat16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = float_to_bf16(bf16_to_float(a[i]) + bf16_to_float(b[i]));
}

MPI_Op mpi_op(ReduceOp op, CommType type) {
  if (type == CommType::BF16) {
    MOERUN_CHECK(op == ReduceOp::Sum, MpiError, "[mpi] bf16 reductions support only sums");
    static const MPI_Op sum = [] {
      MPI_Op created;
      MPI_Op_create(&bf16_sum, /*commute=*/1, &created);
      return created;
    }();
    return sum;
  }
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

// MPI takes int counts; refuse instead of narrowing silently.
int to_int(std::int64_t v, const char* call, const std::string& group) {
  MOERUN_CHECK(v >= 0 && v <= INT_MAX, MpiError,
               "[{} on {}] count or displacement {} does not fit MPI's int; split the message", call, group, v);
  return static_cast<int>(v);
}

std::vector<int> to_ints(std::span<const std::int64_t> v, const char* call, const std::string& group) {
  std::vector<int> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = to_int(v[i], call, group);
  return out;
}

class MpiRequest final : public CommRequest {
 public:
  MpiRequest(const MpiGroup& group, MPI_Request request) : group_(group), request_(request) {}
  ~MpiRequest() override {
    if (request_ != MPI_REQUEST_NULL) {
      std::fprintf(stderr, "[moerun] bug: a non-blocking MPI operation on %s was destroyed before wait()\n",
                   group_.name().c_str());
      MPI_Abort(MPI_COMM_WORLD, 70);
    }
  }
  void wait() override {
    const watchdog::Scope watch("MPI_Wait", group_.name());
    group_.check(MPI_Wait(&request_, MPI_STATUS_IGNORE), "MPI_Wait");
  }

 private:
  const MpiGroup& group_;
  MPI_Request request_;
};

// A non-blocking reduction whose result MPI writes to a staging buffer: wait() copies it to
// `dst` and gives the buffer back to the group.
class StagedRequest final : public CommRequest {
 public:
  StagedRequest(MpiGroup& group, MPI_Request request, std::vector<std::byte> staging, char* dst, std::size_t bytes)
      : group_(group), inner_(group, request), staging_(std::move(staging)), dst_(dst), bytes_(bytes) {}
  void wait() override {
    inner_.wait();
    if (staging_.empty()) return;  // waited before
    std::memcpy(dst_, staging_.data(), bytes_);
    group_.give_back_staging(std::move(staging_));
    staging_.clear();
  }

 private:
  MpiGroup& group_;
  MpiRequest inner_;
  std::vector<std::byte> staging_;
  char* dst_;
  std::size_t bytes_;
};

}  // namespace

MpiEnvironment::MpiEnvironment(int* argc, char*** argv) {
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    throw MpiError("[MPI_Init_thread] failed to initialize MPI; is this run under mpirun?", __FILE__, __LINE__);
  }
  if (provided < MPI_THREAD_FUNNELED) {
    MPI_Finalize();
    throw MpiError(fmt::format("[MPI_Init_thread] the MPI library provides thread level {} but moerun needs "
                               "MPI_THREAD_FUNNELED ({})", provided, MPI_THREAD_FUNNELED),
                   __FILE__, __LINE__);
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

MpiEnvironment::~MpiEnvironment() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

std::unique_ptr<ProcessGroup> MpiEnvironment::world() const {
  MPI_Comm dup;
  const int code = MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  MOERUN_CHECK(code == MPI_SUCCESS, MpiError, "[MPI_Comm_dup on world] failed with code {}", code);
  return std::make_unique<MpiGroup>(dup, "world");
}

void MpiEnvironment::abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

namespace {
// The communicator's rank or size; sets MPI_ERRORS_RETURN first so that failures come back as codes.
int query(MPI_Comm comm, bool rank) {
  int value = 0;
  const int code = MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN) == MPI_SUCCESS
                       ? (rank ? MPI_Comm_rank(comm, &value) : MPI_Comm_size(comm, &value))
                       : MPI_ERR_COMM;
  MOERUN_CHECK(code == MPI_SUCCESS, MpiError, "[MPI_Comm_{}] failed with code {}", rank ? "rank" : "size", code);
  return value;
}

void check_type(const char* call, const std::string& group, CommType a, CommType b) {
  MOERUN_CHECK(a == b, MpiError, "[{} on {}] the send and receive buffers hold different element types", call, group);
}
}  // namespace

MpiGroup::MpiGroup(MPI_Comm comm, const std::string& name)
    : ProcessGroup(name, query(comm, true), query(comm, false)), comm_(comm) {}

MpiGroup::~MpiGroup() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiGroup::check(int code, const char* call) const {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  int world_rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MOERUN_THROW(MpiError, "[{} on {}, rank {} (world rank {})] {}", call, name(), rank(), world_rank, std::string(text, len));
}

std::unique_ptr<ProcessGroup> MpiGroup::split(int color, int key, const std::string& name) const {
  const watchdog::Scope watch("MPI_Comm_split", this->name());
  MPI_Comm out;
  check(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &out), "MPI_Comm_split");
  if (out == MPI_COMM_NULL) return nullptr;
  return std::make_unique<MpiGroup>(out, name);
}

std::unique_ptr<ProcessGroup> MpiGroup::split_node_local(const std::string& name) const {
  MPI_Comm out;
  check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank(), MPI_INFO_NULL, &out), "MPI_Comm_split_type");
  return std::make_unique<MpiGroup>(out, name);
}

void MpiGroup::barrier() {
  const watchdog::Scope watch("MPI_Barrier", name());
  check(MPI_Barrier(comm_), "MPI_Barrier");
}

void MpiGroup::all_reduce(CommSpan data, ReduceOp op) {
  const MPI_Op mpi_reduce = mpi_op(op, data.type);  // refuses what MPI cannot reduce, at any size
  if (size() == 1) return;
  const watchdog::Scope watch("MPI_Allreduce", name());
  check(MPI_Allreduce(MPI_IN_PLACE, data.data, to_int(data.count, "MPI_Allreduce", name()), mpi_type(data.type), mpi_reduce,
                      comm_),
        "MPI_Allreduce");
}

// Open MPI 4.1's non-blocking reductions in place (libnbc) copy the buffer into a temporary
// they allocate on every call: fresh pages, faulted in on the calling thread. On the VMs this
// runs on that made each launch of a 4 MiB gradient bucket take about 11 ms (a blocking
// all-reduce of it: 0.6 ms), and 17 buckets of replicated experts' gradients cost a layer's
// backward 190 ms. Out of place, into a staging buffer kept for reuse, a launch takes
// microseconds; wait() copies the result back (about 0.4 ms per 4 MiB).
std::vector<std::byte> MpiGroup::take_staging(std::size_t bytes) {
  auto fits = staging_.end();
  for (auto it = staging_.begin(); it != staging_.end(); ++it)
    if (it->size() >= bytes && (fits == staging_.end() || it->size() < fits->size())) fits = it;
  if (fits == staging_.end() && !staging_.empty())  // grow the largest rather than keep one more
    fits = std::max_element(staging_.begin(), staging_.end(), [](const auto& a, const auto& b) { return a.size() < b.size(); });
  std::vector<std::byte> buffer;
  if (fits != staging_.end()) {
    buffer = std::move(*fits);
    staging_.erase(fits);
  }
  if (buffer.size() < bytes) buffer.resize(bytes);  // pages touched once, here
  return buffer;
}

std::size_t MpiGroup::staging_bytes() const {
  std::size_t n = 0;
  for (const auto& b : staging_) n += b.size();
  return n;
}

std::unique_ptr<CommRequest> MpiGroup::all_reduce_async(CommSpan data, ReduceOp op) {
  const int count = to_int(data.count, "MPI_Iallreduce", name());
  const std::size_t bytes = static_cast<std::size_t>(data.count) * comm_type_size(data.type);
  std::vector<std::byte> staging = take_staging(bytes);
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Iallreduce(data.data, staging.data(), count, mpi_type(data.type), mpi_op(op, data.type), comm_, &request),
        "MPI_Iallreduce");
  return std::make_unique<StagedRequest>(*this, request, std::move(staging), static_cast<char*>(data.data), bytes);
}

void MpiGroup::broadcast(CommSpan data, int root) {
  const watchdog::Scope watch("MPI_Bcast", name());
  check(MPI_Bcast(data.data, to_int(data.count, "MPI_Bcast", name()), mpi_type(data.type), root, comm_), "MPI_Bcast");
}

std::unique_ptr<CommRequest> MpiGroup::reduce_scatter_async(CommSpan data, std::span<const std::int64_t> counts,
                                                            ReduceOp op) {
  check_blocks("MPI_Ireduce_scatter", counts, {}, data.count);
  const auto c = to_ints(counts, "MPI_Ireduce_scatter", name());
  const std::int64_t offset = block_offsets(counts)[static_cast<std::size_t>(rank())];
  // Out of place, as all_reduce_async (why: there): rank r's block arrives in a staging buffer
  // and wait() copies it to the block's own offset, so that the buffer keeps its layout.
  const std::size_t es = comm_type_size(data.type);
  const std::size_t block_bytes = static_cast<std::size_t>(counts[static_cast<std::size_t>(rank())]) * es;
  std::vector<std::byte> staging = take_staging(std::max<std::size_t>(block_bytes, 1));
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Ireduce_scatter(data.data, staging.data(), c.data(), mpi_type(data.type), mpi_op(op, data.type), comm_, &request),
        "MPI_Ireduce_scatter");
  return std::make_unique<StagedRequest>(*this, request, std::move(staging),
                                         static_cast<char*>(data.data) + static_cast<std::size_t>(offset) * es, block_bytes);
}

void MpiGroup::all_gather_v(CommSpan data, std::span<const std::int64_t> counts) {
  check_blocks("MPI_Allgatherv", counts, {}, data.count);
  const auto c = to_ints(counts, "MPI_Allgatherv", name());
  const auto displs = to_ints(block_offsets(counts), "MPI_Allgatherv", name());
  const watchdog::Scope watch("MPI_Allgatherv", name());
  check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data.data, c.data(), displs.data(), mpi_type(data.type), comm_),
        "MPI_Allgatherv");
}

void MpiGroup::all_to_all_v(ConstCommSpan send, std::span<const std::int64_t> send_counts,
                            std::span<const std::int64_t> send_displs, CommSpan recv,
                            std::span<const std::int64_t> recv_counts, std::span<const std::int64_t> recv_displs) {
  check_type("MPI_Alltoallv", name(), send.type, recv.type);
  check_blocks("MPI_Alltoallv send", send_counts, send_displs, send.count);
  check_blocks("MPI_Alltoallv recv", recv_counts, recv_displs, recv.count);
  const auto sc = to_ints(send_counts, "MPI_Alltoallv", name()), sd = to_ints(send_displs, "MPI_Alltoallv", name());
  const auto rc = to_ints(recv_counts, "MPI_Alltoallv", name()), rd = to_ints(recv_displs, "MPI_Alltoallv", name());
  const watchdog::Scope watch("MPI_Alltoallv", name());
  check(MPI_Alltoallv(send.data, sc.data(), sd.data(), mpi_type(send.type), recv.data, rc.data(), rd.data(),
                      mpi_type(recv.type), comm_),
        "MPI_Alltoallv");
}

std::unique_ptr<CommRequest> MpiGroup::send_async(ConstCommSpan data, int dest, int tag) {
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Isend(data.data, to_int(data.count, "MPI_Isend", name()), mpi_type(data.type), dest, tag, comm_, &request),
        "MPI_Isend");
  return std::make_unique<MpiRequest>(*this, request);
}

std::unique_ptr<CommRequest> MpiGroup::recv_async(CommSpan data, int source, int tag) {
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Irecv(data.data, to_int(data.count, "MPI_Irecv", name()), mpi_type(data.type), source, tag, comm_,
                  &request),
        "MPI_Irecv");
  return std::make_unique<MpiRequest>(*this, request);
}

}  // namespace moerun
