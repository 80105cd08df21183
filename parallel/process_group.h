// ProcessGroup: the collective-communication interface moerun's parallel code uses, with an
// MPI implementation (mpi_group.h) and a size-1 LocalGroup so that the model and trainer run
// and are unit-tested without mpirun.
//
// Typed: every buffer is a CommSpan (or ConstCommSpan) made from a typed span or vector, so
// the element type travels with the data and the length is known. Every call checks that
// its counts and displacements stay inside the buffers it was given, and that 64-bit counts
// fit the transport (MPI's int), and throws instead of writing out of bounds or narrowing.
//
// Collective contract: every rank of a group makes the same collective calls in the same
// order, with matching counts.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/bfloat16.h"

namespace moerun {

enum class CommType { F32, F64, I32, I64, U8, BF16 };  // BF16: sums add in fp32, round once per addition
enum class ReduceOp { Sum, Max, Min };

std::size_t comm_type_size(CommType t);

// Where each of consecutive blocks of `counts` elements starts: 0, c0, c0 + c1, ...
std::vector<std::int64_t> block_offsets(std::span<const std::int64_t> counts);

template <class T>
constexpr CommType comm_type_of() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>) return CommType::F32;
  else if constexpr (std::is_same_v<U, double>) return CommType::F64;
  else if constexpr (std::is_same_v<U, std::int32_t>) return CommType::I32;
  else if constexpr (std::is_same_v<U, std::int64_t>) return CommType::I64;
  else if constexpr (std::is_same_v<U, bfloat16>) return CommType::BF16;
  else {
    static_assert(std::is_same_v<U, std::uint8_t> || std::is_same_v<U, char>, "no CommType for this element type");
    return CommType::U8;
  }
}

// `count` elements of `type` at `data`, written by the collective.
struct CommSpan {
  void* data = nullptr;
  std::int64_t count = 0;
  CommType type = CommType::U8;

  CommSpan() = default;
  CommSpan(void* d, std::int64_t n, CommType t) : data(d), count(n), type(t) {}
  template <class T>
    requires(!std::is_const_v<T>)
  CommSpan(std::span<T> s) : data(s.data()), count(std::ssize(s)), type(comm_type_of<T>()) {}
  template <class T>
  CommSpan(std::vector<T>& v) : CommSpan(std::span<T>(v)) {}
};

// The same, only read by the collective.
struct ConstCommSpan {
  const void* data = nullptr;
  std::int64_t count = 0;
  CommType type = CommType::U8;

  ConstCommSpan() = default;
  ConstCommSpan(const void* d, std::int64_t n, CommType t) : data(d), count(n), type(t) {}
  ConstCommSpan(CommSpan s) : data(s.data), count(s.count), type(s.type) {}
  template <class T>
  ConstCommSpan(std::span<T> s) : data(s.data()), count(std::ssize(s)), type(comm_type_of<T>()) {}
  template <class T>
  ConstCommSpan(const std::vector<T>& v) : ConstCommSpan(std::span<const T>(v)) {}
};

// A pending non-blocking operation. wait() completes it; destroying one that was never
// waited for is a bug, reported loudly.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
};

class ProcessGroup {
 public:
  ProcessGroup(std::string name, int rank, int size) : name_(std::move(name)), rank_(rank), size_(size) {}
  virtual ~ProcessGroup() = default;
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }  // for error messages: "world", "ep", ...

  // Ranks with equal color form a new group, ordered by key (then by old rank). A negative
  // color means "not a member": that rank gets nullptr.
  virtual std::unique_ptr<ProcessGroup> split(int color, int key, const std::string& name) const = 0;
  // The ranks of this group that share this node's memory.
  virtual std::unique_ptr<ProcessGroup> split_node_local(const std::string& name) const = 0;
  virtual void barrier() = 0;
  // In place over every element of `data`.
  virtual void all_reduce(CommSpan data, ReduceOp op = ReduceOp::Sum) = 0;
  // (optional) non-blocking all-reduce; defaults to the blocking one, already complete.
  virtual std::unique_ptr<CommRequest> all_reduce_async(CommSpan data, ReduceOp op);
  // ZeRO's pair, in place over size() consecutive blocks of counts[r] elements of `data`.
  // reduce_scatter: block r of every rank is reduced into block r of rank r (the other blocks
  // are left undefined). Non-blocking: the result is there after wait().
  virtual std::unique_ptr<CommRequest> reduce_scatter_async(CommSpan data, std::span<const std::int64_t> counts,
                                                            ReduceOp op) = 0;
  // all_gather_v: every rank ends with block r of rank r, for every r.
  virtual void all_gather_v(CommSpan data, std::span<const std::int64_t> counts) = 0;
  // Every element of `data` from `root`.
  virtual void broadcast(CommSpan data, int root) = 0;
  // Counts and displacements in elements, one per rank, inside `send` and `recv`.
  virtual void all_to_all_v(ConstCommSpan send, std::span<const std::int64_t> send_counts,
                            std::span<const std::int64_t> send_displs, CommSpan recv,
                            std::span<const std::int64_t> recv_counts, std::span<const std::int64_t> recv_displs) = 0;
  // Point-to-point, non-blocking: the data may be read (send) or written (recv) until wait().
  // Messages between two ranks with the same tag match in the order they were posted.
  virtual std::unique_ptr<CommRequest> send_async(ConstCommSpan data, int dest, int tag) = 0;
  virtual std::unique_ptr<CommRequest> recv_async(CommSpan data, int source, int tag) = 0;

  // recv holds size() blocks of send.count elements, block r from rank r.
  void all_gather(ConstCommSpan send, CommSpan recv);
  // `root`'s text on every rank (its length first, then its bytes).
  std::string broadcast_text(std::string text, int root = 0);
  double all_reduce_value(double v, ReduceOp op = ReduceOp::Sum) {
    all_reduce(std::span<double>(&v, 1), op);
    return v;
  }
  std::int64_t all_reduce_value(std::int64_t v, ReduceOp op = ReduceOp::Sum) {
    all_reduce(std::span<std::int64_t>(&v, 1), op);
    return v;
  }

 protected:
  // Throws MpiError naming the call unless every block [displs[r], displs[r] + counts[r]) lies
  // inside a buffer of `available` elements (displs empty: the blocks follow each other).
  void check_blocks(const char* call, std::span<const std::int64_t> counts, std::span<const std::int64_t> displs,
                    std::int64_t available) const;

 private:
  std::string name_;
  int rank_;
  int size_;
};

// The world of one process: every collective is a copy or a no-op.
class LocalGroup final : public ProcessGroup {
 public:
  explicit LocalGroup(std::string name = "local") : ProcessGroup(std::move(name), 0, 1) {}
  std::unique_ptr<ProcessGroup> split(int color, int key, const std::string& name) const override;
  std::unique_ptr<ProcessGroup> split_node_local(const std::string& name) const override { return split(0, 0, name); }
  void barrier() override {}
  void all_reduce(CommSpan, ReduceOp = ReduceOp::Sum) override {}
  std::unique_ptr<CommRequest> reduce_scatter_async(CommSpan data, std::span<const std::int64_t> counts, ReduceOp) override;
  void all_gather_v(CommSpan data, std::span<const std::int64_t> counts) override;
  void broadcast(CommSpan data, int root) override;
  void all_to_all_v(ConstCommSpan send, std::span<const std::int64_t> send_counts, std::span<const std::int64_t> send_displs,
                    CommSpan recv, std::span<const std::int64_t> recv_counts,
                    std::span<const std::int64_t> recv_displs) override;
  std::unique_ptr<CommRequest> send_async(ConstCommSpan data, int dest, int tag) override;
  std::unique_ptr<CommRequest> recv_async(CommSpan data, int source, int tag) override;
};

}  // namespace moerun
