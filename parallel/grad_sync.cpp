#include "parallel/grad_sync.h"

#include <algorithm>
#include <chrono>

#include "runtime/core/error.h"
#include "runtime/core/trace.h"

namespace moerun {

GradSync::GradSync(const std::vector<Parameter*>& params, ProcessGroup& dense_group, ProcessGroup& expert_group,
                   std::size_t bucket_bytes)
    : GradSync(params,
               [&](const Parameter& p) {
                 return std::vector<ProcessGroup*>{p.kind == ParamKind::Dense ? &dense_group : &expert_group};
               },
               bucket_bytes) {}

GradSync::GradSync(const std::vector<Parameter*>& params, const GroupsOf& groups_of, std::size_t bucket_bytes) {
  // Parameters with the same chain of groups share buckets; a bucket closes when it reaches
  // bucket_bytes. Within a chain, buckets follow the ready order, so they complete in order.
  std::vector<std::vector<ProcessGroup*>> chains;
  std::vector<std::vector<Parameter*>> members_of_chain;
  for (Parameter* p : params) {
    std::vector<ProcessGroup*> chain;
    for (ProcessGroup* g : groups_of(*p))
      if (g != nullptr && g->size() > 1) chain.push_back(g);
    auto it = std::find(chains.begin(), chains.end(), chain);
    if (it == chains.end()) {
      chains.push_back(chain);
      members_of_chain.emplace_back();
      it = chains.end() - 1;
    }
    members_of_chain[static_cast<std::size_t>(it - chains.begin())].push_back(p);
  }
  for (std::size_t c = 0; c < chains.size(); ++c) {
    std::vector<std::vector<Parameter*>> groups(1);
    std::size_t bytes = 0;
    for (Parameter* p : members_of_chain[c]) {
      if (bytes >= bucket_bytes && !groups.back().empty()) {
        groups.emplace_back();
        bytes = 0;
      }
      groups.back().push_back(p);
      bytes += p->grad.bytes();
    }
    for (auto& members : groups) {
      std::int64_t elements = 0;
      for (Parameter* p : members) elements += p->grad.numel();
      Bucket b{chains[c], Tensor::zeros(members.front()->grad.device(), {elements})};
      std::int64_t offset = 0;
      for (Parameter* p : members) {
        Tensor view = b.flat.rows(offset, offset + p->grad.numel()).reshaped(p->grad.shape());
        view.copy_from(p->grad);
        p->grad = std::move(view);  // the gradient now lives in the bucket
        offset += p->grad.numel();
        bucket_of_[p] = buckets_.size();
        ++b.params;
      }
      buckets_.push_back(std::move(b));
    }
  }
}

GradSync::~GradSync() {
  for (Bucket& b : buckets_)
    if (b.request) b.request->wait();  // never leave a request pending
}

void GradSync::launch(Bucket& b) {
  if (b.groups.empty()) return;  // no other copy to sum with
  trace::async_begin("all-reduce", "bucket", static_cast<std::int64_t>(&b - buckets_.data()), b.flat.bytes());
  b.host = std::make_unique<HostAccess>(b.flat, HostAccess::ReadWrite);
  b.request = b.groups.front()->all_reduce_async(b.host->data(), b.flat.numel(), CommType::F32, ReduceOp::Sum);
}

void GradSync::mark_ready(const Parameter& param) {
  auto it = bucket_of_.find(&param);
  MOERUN_CHECK(it != bucket_of_.end(), RuntimeError, "[grad sync] '{}' is not in any bucket", param.name);
  Bucket& b = buckets_[it->second];
  MOERUN_CHECK(b.ready < b.params, RuntimeError, "[grad sync] '{}' marked ready twice in one step", param.name);
  if (++b.ready == b.params) launch(b);
}

std::map<const ProcessGroup*, std::int64_t> GradSync::payload_per_group() const {
  std::map<const ProcessGroup*, std::int64_t> out;
  for (const Bucket& b : buckets_)
    for (const ProcessGroup* g : b.groups) out[g] += static_cast<std::int64_t>(b.flat.bytes());
  return out;
}

double GradSync::finish() {
  const trace::Scope span("all-reduce", "all-reduce wait");
  const auto start = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_) {
    if (b.ready < b.params) {
      b.ready = b.params;
      launch(b);
    }
  }
  for (Bucket& b : buckets_) {
    if (b.request) b.request->wait();
    b.request.reset();
    for (std::size_t g = 1; g < b.groups.size(); ++g)  // the rest of the chain, in turn
      b.groups[g]->all_reduce(b.host->data(), b.flat.numel(), CommType::F32, ReduceOp::Sum);
    b.host.reset();  // copies staged sums back to the device
    if (!b.groups.empty()) trace::async_end("all-reduce", "bucket", static_cast<std::int64_t>(&b - buckets_.data()));
    b.ready = 0;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace moerun
