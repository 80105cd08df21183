// ProcessGroup: the collective-communication interface moerun's parallel code uses, with an
// MPI implementation (mpi_group.h) and a size-1 LocalGroup so that the model and trainer run
// and are unit-tested without mpirun.
//
// Collective contract: every rank of a group makes the same collective calls in the same
// order, with matching counts. Counts and displacements are 64-bit here; implementations
// check that they fit the transport (MPI's int) and throw instead of narrowing.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace moerun {

enum class CommType { F32, F64, I32, I64, U8 };
enum class ReduceOp { Sum, Max, Min };

std::size_t comm_type_size(CommType t);

// A pending non-blocking operation. wait() completes it; destroying one that was never
// waited for is a bug, reported loudly.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // for error messages: "world", "ep", ...

  // Ranks with equal color form a new group, ordered by key (then by old rank). A negative
  // color means "not a member": that rank gets nullptr.
  virtual std::unique_ptr<ProcessGroup> split(int color, int key, const std::string& name) const = 0;
  // The ranks of this group that share this node's memory.
  virtual std::unique_ptr<ProcessGroup> split_node_local(const std::string& name) const = 0;
  virtual void barrier() = 0;
  // In place over `count` elements.
  virtual void all_reduce(void* data, std::int64_t count, CommType type, ReduceOp op) = 0;
  // (optional) non-blocking all-reduce; defaults to the blocking one, already complete.
  virtual std::unique_ptr<CommRequest> all_reduce_async(void* data, std::int64_t count, CommType type, ReduceOp op);
  // recv holds size() blocks of `count` elements, block r from rank r.
  virtual void all_gather(const void* send, void* recv, std::int64_t count, CommType type) = 0;
  virtual void broadcast(void* data, std::int64_t count, CommType type, int root) = 0;
  // ZeRO's pair, in place over size() consecutive blocks of counts[r] elements.
  // reduce_scatter: block r of every rank is reduced into block r of rank r (the other blocks
  // are left undefined). Non-blocking: the result is there after wait().
  virtual std::unique_ptr<CommRequest> reduce_scatter_async(void* data, std::span<const std::int64_t> counts,
                                                            CommType type, ReduceOp op) = 0;
  // all_gather_v: every rank ends with block r of rank r, for every r.
  virtual void all_gather_v(void* data, std::span<const std::int64_t> counts, CommType type) = 0;
  // Counts and displacements in elements, one per rank.
  virtual void all_to_all_v(const void* send, std::span<const std::int64_t> send_counts,
                            std::span<const std::int64_t> send_displs, void* recv,
                            std::span<const std::int64_t> recv_counts, std::span<const std::int64_t> recv_displs,
                            CommType type) = 0;
  virtual void send(const void* data, std::int64_t count, CommType type, int dest, int tag) = 0;
  virtual void recv(void* data, std::int64_t count, CommType type, int source, int tag) = 0;

  // Typed conveniences over the calls above.
  void all_reduce(std::span<float> v, ReduceOp op = ReduceOp::Sum) { all_reduce(v.data(), std::ssize(v), CommType::F32, op); }
  void all_reduce(std::span<double> v, ReduceOp op = ReduceOp::Sum) { all_reduce(v.data(), std::ssize(v), CommType::F64, op); }
  void all_reduce(std::span<std::int64_t> v, ReduceOp op = ReduceOp::Sum) { all_reduce(v.data(), std::ssize(v), CommType::I64, op); }
  double all_reduce_value(double v, ReduceOp op = ReduceOp::Sum) {
    all_reduce(std::span<double>(&v, 1), op);
    return v;
  }
  std::int64_t all_reduce_value(std::int64_t v, ReduceOp op = ReduceOp::Sum) {
    all_reduce(std::span<std::int64_t>(&v, 1), op);
    return v;
  }
};

// The world of one process: every collective is a copy or a no-op.
class LocalGroup final : public ProcessGroup {
 public:
  explicit LocalGroup(std::string name = "local") : name_(std::move(name)) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return name_; }
  std::unique_ptr<ProcessGroup> split(int color, int key, const std::string& name) const override;
  std::unique_ptr<ProcessGroup> split_node_local(const std::string& name) const override { return split(0, 0, name); }
  void barrier() override {}
  void all_reduce(void*, std::int64_t, CommType, ReduceOp) override {}
  void all_gather(const void* send, void* recv, std::int64_t count, CommType type) override;
  void broadcast(void*, std::int64_t, CommType, int root) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(void*, std::span<const std::int64_t> counts, CommType, ReduceOp) override;
  void all_gather_v(void*, std::span<const std::int64_t> counts, CommType) override;
  void all_to_all_v(const void* send, std::span<const std::int64_t> send_counts, std::span<const std::int64_t> send_displs,
                    void* recv, std::span<const std::int64_t> recv_counts, std::span<const std::int64_t> recv_displs,
                    CommType type) override;
  void send(const void*, std::int64_t, CommType, int dest, int tag) override;
  void recv(void*, std::int64_t, CommType, int source, int tag) override;
  using ProcessGroup::all_reduce;

 private:
  std::string name_;
};

}  // namespace moerun
