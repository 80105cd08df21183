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
    case CommType::BF16: return 2;
  }
  return 0;
}

namespace {
class CompletedRequest final : public CommRequest {
 public:
  void wait() override {}
};
}  // namespace

std::unique_ptr<CommRequest> ProcessGroup::all_reduce_async(CommSpan data, ReduceOp op) {
  all_reduce(data, op);
  return std::make_unique<CompletedRequest>();
}

std::vector<std::int64_t> block_offsets(std::span<const std::int64_t> counts) {
  std::vector<std::int64_t> offsets(counts.size(), 0);
  for (std::size_t r = 1; r < counts.size(); ++r) offsets[r] = offsets[r - 1] + counts[r - 1];
  return offsets;
}

std::string ProcessGroup::broadcast_text(std::string text, int root) {
  std::int64_t length = static_cast<std::int64_t>(text.size());
  broadcast(std::span<std::int64_t>(&length, 1), root);
  text.resize(static_cast<std::size_t>(length));
  broadcast(std::span<char>(text.data(), text.size()), root);
  return text;
}

void ProcessGroup::check_blocks(const char* call, std::span<const std::int64_t> counts,
                                std::span<const std::int64_t> displs, std::int64_t available) const {
  MOERUN_CHECK(counts.size() == static_cast<std::size_t>(size_) && (displs.empty() || displs.size() == counts.size()),
               MpiError, "[{} on {}] {} counts and {} displacements for a group of {}", call, name_, counts.size(),
               displs.size(), size_);
  std::int64_t next = 0;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    const std::int64_t at = displs.empty() ? next : displs[r];
    MOERUN_CHECK(counts[r] >= 0 && at >= 0 && at + counts[r] <= available, MpiError,
                 "[{} on {}] block {} is elements [{}, {}) but the buffer holds {}", call, name_, r, at, at + counts[r],
                 available);
    next = at + counts[r];
  }
}

void ProcessGroup::all_gather(ConstCommSpan send, CommSpan recv) {
  MOERUN_CHECK(send.type == recv.type && recv.count == send.count * size_, MpiError,
               "[all_gather on {}] {} elements from each of {} ranks need {} to receive, got {}", name_, send.count,
               size_, send.count * size_, recv.count);
  const std::size_t bytes = static_cast<std::size_t>(send.count) * comm_type_size(send.type);
  std::memmove(static_cast<char*>(recv.data) + static_cast<std::size_t>(rank_) * bytes, send.data, bytes);
  const std::vector<std::int64_t> counts(static_cast<std::size_t>(size_), send.count);
  all_gather_v(recv, counts);
}

std::unique_ptr<ProcessGroup> LocalGroup::split(int color, int, const std::string& name) const {
  if (color < 0) return nullptr;
  return std::make_unique<LocalGroup>(name);
}

void LocalGroup::broadcast(CommSpan, int root) {
  MOERUN_CHECK(root == 0, MpiError, "[broadcast on {}] root {} does not exist in a group of 1", name(), root);
}

std::unique_ptr<CommRequest> LocalGroup::reduce_scatter_async(CommSpan data, std::span<const std::int64_t> counts, ReduceOp) {
  check_blocks("reduce_scatter", counts, {}, data.count);
  return std::make_unique<CompletedRequest>();  // the one block is already the sum
}

void LocalGroup::all_gather_v(CommSpan data, std::span<const std::int64_t> counts) {
  check_blocks("all_gather_v", counts, {}, data.count);
}

void LocalGroup::all_to_all_v(ConstCommSpan send, std::span<const std::int64_t> send_counts,
                              std::span<const std::int64_t> send_displs, CommSpan recv,
                              std::span<const std::int64_t> recv_counts, std::span<const std::int64_t> recv_displs) {
  check_blocks("all_to_all_v send", send_counts, send_displs, send.count);
  check_blocks("all_to_all_v recv", recv_counts, recv_displs, recv.count);
  MOERUN_CHECK(send_counts[0] == recv_counts[0] && send.type == recv.type, MpiError,
               "[all_to_all_v on {}] a group of 1 must send to itself what it receives", name());
  const std::size_t es = comm_type_size(send.type);
  const std::int64_t from = send_displs.empty() ? 0 : send_displs[0], to = recv_displs.empty() ? 0 : recv_displs[0];
  std::memmove(static_cast<char*>(recv.data) + to * es, static_cast<const char*>(send.data) + from * es,
               static_cast<std::size_t>(send_counts[0]) * es);
}

std::unique_ptr<CommRequest> LocalGroup::send_async(ConstCommSpan, int dest, int tag) {
  MOERUN_THROW(MpiError, "[send on {}] to rank {} (tag {}): a group of 1 has no peer", name(), dest, tag);
}

std::unique_ptr<CommRequest> LocalGroup::recv_async(CommSpan, int source, int tag) {
  MOERUN_THROW(MpiError, "[recv on {}] from rank {} (tag {}): a group of 1 has no peer", name(), source, tag);
}

}  // namespace moerun
