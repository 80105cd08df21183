#include "parallel/migrator.h"

#include <chrono>
#include <exception>
#include <memory>

#include "parallel/host_access.h"
#include "runtime/error.h"

namespace moerun {

namespace {

// A posted send or receive and the host view it reads or writes (a receive's view writes back
// to the device when it is destroyed, after the wait).
struct PendingTransfer {
  std::unique_ptr<HostAccess> host;
  std::unique_ptr<CommRequest> request;
};

// Waits for every request, even after one failed (a request must not be dropped unwaited),
// then rethrows the first failure.
void wait_all(std::vector<PendingTransfer>& pending) {
  std::exception_ptr first_failure;
  for (PendingTransfer& p : pending) {
    try {
      p.request->wait();
    } catch (...) {
      if (!first_failure) first_failure = std::current_exception();
    }
  }
  if (first_failure) std::rethrow_exception(first_failure);
}

}  // namespace

MigrationStats migrate_experts(ProcessGroup& ep_group, const std::vector<int>& layers, const std::vector<Placement>& from,
                               const std::vector<Placement>& to, ExpertStateStore& store) {
  const auto start = std::chrono::steady_clock::now();
  const int me = ep_group.rank();
  MigrationStats stats;
  std::vector<PendingTransfer> pending;
  auto post = [&](Tensor& t, HostAccess::Mode mode, int peer, int tag) {
    PendingTransfer& p = pending.emplace_back();
    p.host = std::make_unique<HostAccess>(t, mode);
    p.request = mode == HostAccess::Read ? ep_group.send_async(p.host->span(), peer, tag)
                                         : ep_group.recv_async(p.host->span(), peer, tag);
  };
  int tag = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    for (int e = 0; e < to[i].experts(); ++e) {
      const int source = from[i].replicas(e).front().rank;
      for (const Replica& r : to[i].replicas(e)) {
        if (from[i].holds(r.rank, e)) continue;  // already there
        ++stats.replicas_created;
        tag = (tag + 1) % 30000;
        if (me == source) {
          for (Tensor* t : store.expert_tensors(layers[i], e)) {
            post(*t, HostAccess::Read, r.rank, tag);
            stats.bytes_sent += static_cast<std::int64_t>(t->bytes());
          }
        } else if (me == r.rank) {
          for (Tensor* t : store.create_expert(layers[i], e)) {
            post(*t, HostAccess::Write, source, tag);
            stats.bytes_received += static_cast<std::int64_t>(t->bytes());
          }
        }
      }
    }
  }
  wait_all(pending);
  pending.clear();  // received tensors are written back to the device here
  for (std::size_t i = 0; i < layers.size(); ++i) {
    for (int e = 0; e < to[i].experts(); ++e) {
      if (from[i].holds(me, e) && !to[i].holds(me, e)) {
        store.drop_expert(layers[i], e);
        ++stats.replicas_dropped;
      }
    }
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace moerun
