#include "parallel/migrator.h"

#include <chrono>

#include "parallel/host_access.h"
#include "runtime/error.h"

namespace moerun {

MigrationStats migrate_experts(ProcessGroup& ep_group, const std::vector<int>& layers, const std::vector<Placement>& from,
                               const std::vector<Placement>& to, ExpertStateStore& store) {
  const auto start = std::chrono::steady_clock::now();
  const int me = ep_group.rank();
  MigrationStats stats;
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
            HostAccess host(*t, HostAccess::Read);
            ep_group.send(host.span(), r.rank, tag);
            stats.bytes_sent += static_cast<std::int64_t>(t->bytes());
          }
        } else if (me == r.rank) {
          for (Tensor* t : store.create_expert(layers[i], e)) {
            HostAccess host(*t, HostAccess::Write);
            ep_group.recv(host.span(), source, tag);
            stats.bytes_received += static_cast<std::int64_t>(t->bytes());
          }
        }
      }
    }
  }
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
