#include "parallel/grad_sync.h"

#include <algorithm>
#include <chrono>

#include "kernels/elementwise.h"
#include "runtime/error.h"
#include "runtime/trace.h"

namespace moerun {

GradSync::GradSync(const std::vector<Parameter*>& params, ProcessGroup& dense_group, ProcessGroup& expert_group,
                   std::size_t bucket_bytes)
    : GradSync(params,
               [&](const Parameter& p) {
                 return Groups{{p.kind == ParamKind::Dense ? &dense_group : &expert_group}, nullptr};
               },
               bucket_bytes) {}

GradSync::GradSync(const std::vector<Parameter*>& params, const GroupsOf& groups_of, std::size_t bucket_bytes,
                   DType wire_dtype) {
  MOERUN_CHECK(is_floating(wire_dtype), RuntimeError, "[grad sync] gradients cannot travel as {}", dtype_name(wire_dtype));
  // Parameters with the same groups share buckets; a bucket closes when it reaches
  // bucket_bytes, or, sharded, at the end of an expert. Within a chain, buckets follow the
  // ready order, so they complete in order.
  struct Chain {
    std::vector<ProcessGroup*> groups;
    ProcessGroup* shard = nullptr;
    bool operator==(const Chain&) const = default;
  };
  std::vector<Chain> chains;
  std::vector<std::vector<Parameter*>> members_of_chain;
  for (Parameter* p : params) {
    const Groups wanted = groups_of(*p);
    Chain chain;
    for (ProcessGroup* g : wanted.sum_over)
      if (g != nullptr && g->size() > 1) chain.groups.push_back(g);
    if (wanted.shard_over != nullptr && wanted.shard_over->size() > 1) {
      MOERUN_CHECK(!chain.groups.empty() && chain.groups.back() == wanted.shard_over, RuntimeError,
                   "[grad sync] '{}' is sharded over {}, which must be the last group it is summed over", p->name,
                   wanted.shard_over->name());
      chain.shard = wanted.shard_over;
    }
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
      const Parameter* last = groups.back().empty() ? nullptr : groups.back().back();
      const bool per_expert = chains[c].shard != nullptr && p->kind == ParamKind::Expert;
      const bool close = last != nullptr && (per_expert ? (last->layer != p->layer || last->expert != p->expert)
                                                        : bytes >= bucket_bytes);
      if (close) {
        groups.emplace_back();
        bytes = 0;
      }
      groups.back().push_back(p);
      bytes += p->grad.bytes();
    }
    for (auto& members : groups) {
      std::int64_t elements = 0;
      std::vector<Shape> shapes;
      for (Parameter* p : members) {
        elements += p->grad.numel();
        shapes.push_back(p->grad.shape());
      }
      Device& dev = members.front()->grad.device();
      Bucket b{chains[c].groups, chains[c].shard, {}, members, {}, Tensor::zeros(dev, {elements})};
      if (wire_dtype != DType::F32 && !b.groups.empty()) b.wire = Tensor(dev, {elements}, wire_dtype);
      std::vector<std::int64_t> bounds;
      if (b.shard_group != nullptr) {
        bounds = shard_bounds(shapes, b.shard_group->size());
        for (std::size_t r = 0; r + 1 < bounds.size(); ++r) b.shard_counts.push_back(bounds[r + 1] - bounds[r]);
      }
      std::int64_t offset = 0;
      for (std::size_t i = 0; i < members.size(); ++i) {
        Parameter* p = members[i];
        Tensor view = b.flat.rows(offset, offset + p->grad.numel()).reshaped(p->grad.shape());
        view.copy_from(p->grad);
        p->grad = std::move(view);  // the gradient now lives in the bucket
        b.offsets.push_back(offset);
        offset += p->grad.numel();
        bucket_of_[p] = buckets_.size();
        if (b.shard_group != nullptr) owned_[p] = shard_rows(shapes, bounds, i, b.shard_group->rank());
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
  if (b.wire.defined()) kernels::convert(b.flat, b.wire);
  b.host = std::make_unique<HostAccess>(b.wire.defined() ? b.wire : b.flat, HostAccess::ReadWrite);
  ProcessGroup* first = b.groups.front();
  b.request = first == b.shard_group ? first->reduce_scatter_async(b.host->span(), b.shard_counts, ReduceOp::Sum)
                                     : first->all_reduce_async(b.host->span(), ReduceOp::Sum);
  in_flight_.push_back(&b);
  if (in_flight_.size() > kMaxInFlight) {
    in_flight_.front()->request->wait();
    in_flight_.front()->request.reset();
    in_flight_.erase(in_flight_.begin());
  }
}

void GradSync::mark_ready(const Parameter& param) {
  auto it = bucket_of_.find(&param);
  MOERUN_CHECK(it != bucket_of_.end(), RuntimeError, "[grad sync] '{}' is not in any bucket", param.name);
  Bucket& b = buckets_[it->second];
  MOERUN_CHECK(b.ready < b.members.size(), RuntimeError, "[grad sync] '{}' marked ready twice in one step", param.name);
  if (++b.ready == b.members.size()) launch(b);
}

std::map<const ProcessGroup*, std::int64_t> GradSync::payload_per_group() const {
  std::map<const ProcessGroup*, std::int64_t> out;
  for (const Bucket& b : buckets_)
    for (const ProcessGroup* g : b.groups) out[g] += static_cast<std::int64_t>((b.wire.defined() ? b.wire : b.flat).bytes());
  return out;
}

RowRange GradSync::owned_rows(const Parameter& param) const {
  auto it = owned_.find(&param);
  if (it != owned_.end()) return it->second;
  return {0, param.grad.shape().empty() ? 1 : param.grad.dim(0)};
}

bool GradSync::sharded(const Parameter& param) const { return owned_.contains(&param); }

double GradSync::finish() {
  const trace::Scope span("all-reduce", "all-reduce wait");
  const auto start = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_) {
    if (b.ready < b.members.size()) {
      b.ready = b.members.size();
      launch(b);
    }
  }
  in_flight_.clear();
  for (Bucket& b : buckets_) {
    if (b.request) b.request->wait();
    b.request.reset();
    for (std::size_t g = 1; g < b.groups.size(); ++g) {  // the rest of the chain, in turn
      if (b.groups[g] == b.shard_group) {
        b.groups[g]->reduce_scatter_async(b.host->span(), b.shard_counts, ReduceOp::Sum)->wait();
      } else {
        b.groups[g]->all_reduce(b.host->span(), ReduceOp::Sum);
      }
    }
    b.host.reset();  // copies staged sums back to the device
    if (b.wire.defined()) kernels::convert(b.wire, b.flat);  // the sum, back into the fp32 gradients
    if (!b.groups.empty()) trace::async_end("all-reduce", "bucket", static_cast<std::int64_t>(&b - buckets_.data()));
    b.ready = 0;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void GradSync::gather_parameters() {
  const trace::Scope span("all-reduce", "all-gather parameters");
  for (Bucket& b : buckets_) {
    if (b.shard_group == nullptr) continue;
    // The bucket's gradients are spent: it carries the updated rows now.
    for (std::size_t i = 0; i < b.members.size(); ++i) {
      Parameter* p = b.members[i];
      const RowRange rows = owned_.at(p);
      if (rows.empty()) continue;
      const std::int64_t width = p->value.numel() / std::max<std::int64_t>(1, p->value.dim(0));
      Tensor dst = b.flat.rows(b.offsets[i] + rows.begin * width, b.offsets[i] + rows.end * width);
      dst.copy_from(p->value.rows(rows.begin, rows.end).reshaped({rows.rows() * width}));
    }
    {
      HostAccess host(b.flat, HostAccess::ReadWrite);
      b.shard_group->all_gather_v(host.span(), b.shard_counts);
    }
    for (std::size_t i = 0; i < b.members.size(); ++i) {
      Parameter* p = b.members[i];
      p->value.copy_from(b.flat.rows(b.offsets[i], b.offsets[i] + p->value.numel()).reshaped(p->value.shape()));
    }
  }
}

}  // namespace moerun
