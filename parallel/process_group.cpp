#include "parallel/process_group.h"

#include <cstring>

#include "runtime/error.h"

namespace moerun {

std::size_t comm_type_size(CommType t) {
  switch (t) {
    case CommType::F32: return 4;
    case CommType::F64: return 8;
    case CommType::I32: return 4;
    case CommType::I64: return 8;
    case CommType::U8: return 1;
  }
  return 0;
}

namespace {
class CompletedRequest final : public CommRequest {
 public:
  void wait() override {}
};
}  // namespace

std::unique_ptr<CommRequest> ProcessGroup::all_reduce_async(void* data, std::int64_t count, CommType type, ReduceOp op) {
  all_reduce(data, count, type, op);
  return std::make_unique<CompletedRequest>();
}

std::unique_ptr<ProcessGroup> LocalGroup::split(int color, int, const std::string& name) const {
  if (color < 0) return nullptr;
  return std::make_unique<LocalGroup>(name);
}

void LocalGroup::all_gather(const void* send, void* recv, std::int64_t count, CommType type) {
  if (send != recv) std::memmove(recv, send, static_cast<std::size_t>(count) * comm_type_size(type));
}

void LocalGroup::broadcast(void*, std::int64_t, CommType, int root) {
  MOERUN_CHECK(root == 0, MpiError, "[broadcast on {}] root {} does not exist in a group of 1", name_, root);
}

std::unique_ptr<CommRequest> LocalGroup::reduce_scatter_async(void*, std::span<const std::int64_t> counts, CommType,
                                                              ReduceOp) {
  MOERUN_CHECK(counts.size() == 1, MpiError, "[reduce_scatter on {}] {} blocks for a group of 1", name_, counts.size());
  return std::make_unique<CompletedRequest>();  // the one block is already the sum
}

void LocalGroup::all_gather_v(void*, std::span<const std::int64_t> counts, CommType) {
  MOERUN_CHECK(counts.size() == 1, MpiError, "[all_gather_v on {}] {} blocks for a group of 1", name_, counts.size());
}

void LocalGroup::all_to_all_v(const void* send, std::span<const std::int64_t> send_counts,
                              std::span<const std::int64_t> send_displs, void* recv,
                              std::span<const std::int64_t> recv_counts, std::span<const std::int64_t> recv_displs,
                              CommType type) {
  MOERUN_CHECK(send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0], MpiError,
               "[all_to_all_v on {}] a group of 1 must send to itself what it receives", name_);
  const std::size_t es = comm_type_size(type);
  std::memmove(static_cast<char*>(recv) + recv_displs[0] * es, static_cast<const char*>(send) + send_displs[0] * es,
               static_cast<std::size_t>(send_counts[0]) * es);
}

void LocalGroup::send(const void*, std::int64_t, CommType, int dest, int tag) {
  MOERUN_THROW(MpiError, "[send on {}] to rank {} (tag {}): a group of 1 has no peer", name_, dest, tag);
}

void LocalGroup::recv(void*, std::int64_t, CommType, int source, int tag) {
  MOERUN_THROW(MpiError, "[recv on {}] from rank {} (tag {}): a group of 1 has no peer", name_, source, tag);
}

}  // namespace moerun
