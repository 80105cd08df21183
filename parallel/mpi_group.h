// MPI implementation of ProcessGroup and the MPI environment (init/finalize).
// Owns: one duplicated MPI communicator per group (freed in the destructor), with
// MPI_ERRORS_RETURN set so that every failure becomes an MpiError naming the rank, the
// call and the group. Does not own: what is communicated (see token_dispatcher, grad_sync).
#pragma once

#include <mpi.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "parallel/process_group.h"

namespace moerun {

// Initializes MPI (MPI_THREAD_FUNNELED: only the main thread calls MPI) and finalizes it
// on destruction. Exactly one per process, created first in main().
class MpiEnvironment {
 public:
  MpiEnvironment(int* argc, char*** argv);
  ~MpiEnvironment();
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;
  // The world as a group (a duplicate of MPI_COMM_WORLD).
  std::unique_ptr<ProcessGroup> world() const;
  // Ends every rank of the job with exit code `code`; used when a rank fails so that no
  // other rank is left waiting in a collective.
  [[noreturn]] static void abort(int code);
};

class MpiGroup final : public ProcessGroup {
 public:
  // Takes ownership of `comm` (an MPI_Comm_dup or split result).
  MpiGroup(MPI_Comm comm, const std::string& name);
  ~MpiGroup() override;
  MpiGroup(const MpiGroup&) = delete;
  MpiGroup& operator=(const MpiGroup&) = delete;

  std::unique_ptr<ProcessGroup> split(int color, int key, const std::string& name) const override;
  std::unique_ptr<ProcessGroup> split_node_local(const std::string& name) const override;
  void barrier() override;
  void all_reduce(CommSpan data, ReduceOp op = ReduceOp::Sum) override;
  std::unique_ptr<CommRequest> all_reduce_async(CommSpan data, ReduceOp op) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(CommSpan data, std::span<const std::int64_t> counts,
                                                    ReduceOp op) override;
  void all_gather_v(CommSpan data, std::span<const std::int64_t> counts) override;
  void broadcast(CommSpan data, int root) override;
  void all_to_all_v(ConstCommSpan send, std::span<const std::int64_t> send_counts, std::span<const std::int64_t> send_displs,
                    CommSpan recv, std::span<const std::int64_t> recv_counts,
                    std::span<const std::int64_t> recv_displs) override;
  std::unique_ptr<CommRequest> send_async(ConstCommSpan data, int dest, int tag) override;
  std::unique_ptr<CommRequest> recv_async(CommSpan data, int source, int tag) override;

  MPI_Comm comm() const { return comm_; }
  // Throws MpiError "[call on group, rank r] <MPI's text>" unless code == MPI_SUCCESS.
  void check(int code, const char* call) const;

  // Host buffers for the non-blocking reductions' results (see all_reduce_async), kept for
  // reuse: taken for a call, given back by its request's wait().
  std::vector<std::byte> take_staging(std::size_t bytes);
  void give_back_staging(std::vector<std::byte> buffer) { staging_.push_back(std::move(buffer)); }
  std::size_t staging_bytes() const;  // held in the pool now

 private:
  MPI_Comm comm_;
  std::vector<std::vector<std::byte>> staging_;
};

}  // namespace moerun
