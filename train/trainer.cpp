#include "train/trainer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_writer.h"
#include "checkpoint/format.h"
#include "kernels/elementwise.h"
#include "kernels/optimizer.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/mpi_group.h"
#include "train/signals.h"
#include "runtime/error.h"
#include "runtime/trace.h"
#include "runtime/vocab.h"
#include "data/token_file.h"
#include "model/feed_forward.h"
#include "model/lm_loss.h"

namespace moerun {

namespace {
using Clock = std::chrono::steady_clock;

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) {
    b /= 1024.0;
    ++u;
  }
  return fmt::format("{:.1f} {}", b, units[u]);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}
}  // namespace

Trainer::Trainer(const Config& config, ProcessGroup& world, Device& device, const std::string& run_dir)
    : config_(config), world_(world), device_(device), run_dir_(run_dir) {
  config_.validate(world.size());
  // Before anything is allocated: a layout over runtime.memory_limit stops here.
  memory_estimate_ = checked_memory_estimate(config_, world.size(), !device.host_accessible());
  topology_ = std::make_unique<Topology>(world, static_cast<int>(config_.parallel.ep), static_cast<int>(config_.model.experts),
                                         static_cast<int>(config_.parallel.ranks_per_node));
  params_ = std::make_unique<ParameterStore>(device, static_cast<std::uint64_t>(config_.train.seed), config_.model.init_std);
  const int experts = static_cast<int>(config_.model.experts);
  std::vector<TokenDispatcher*> per_block;
  if (topology_->ep() == 1) {
    dispatchers_.push_back(std::make_unique<LocalTokenDispatcher>(experts));
    per_block.assign(static_cast<std::size_t>(config_.model.n_layers), dispatchers_.front().get());
  } else {
    // The hierarchical exchange pays off when the EP group spans nodes and some node holds
    // several of its ranks (their rows for another node then travel as one message).
    const std::vector<int> node_of = topology_->node_of_ep_rank();
    std::map<int, int> ranks_on_node;
    for (int n : node_of) ++ranks_on_node[n];
    const bool worth_it = ranks_on_node.size() > 1 &&
                          std::any_of(ranks_on_node.begin(), ranks_on_node.end(), [](const auto& kv) { return kv.second > 1; });
    const bool hierarchical = config_.parallel.all_to_all == "hierarchical" || (config_.parallel.all_to_all == "auto" && worth_it);
    for (int l = 0; l < config_.model.n_layers; ++l) {  // each MoE layer gets its own placement
      auto dispatcher = std::make_unique<AllToAllDispatcher>(topology_->ep_group(), Placement::contiguous(experts, topology_->ep()));
      dispatcher->set_nodes(node_of, hierarchical);
      dispatchers_.push_back(std::move(dispatcher));
      per_block.push_back(dispatchers_.back().get());
    }
  }
  model_ = std::make_unique<Transformer>(config_.model, *params_, per_block);
  model_->set_recompute(parse_recompute(config_.train.recompute));
  moe_blocks_ = model_->moe_layer_ids();
  if (topology_->ep() > 1)
    for (std::size_t i = 0; i < moe_blocks_.size(); ++i) placements_.push_back(Placement::contiguous(experts, topology_->ep()));
  rebuild_grad_sync();  // before the optimizer: under ZeRO-1 the buckets decide whose rows are whose
  optimizer_ = std::make_unique<AdamW>(config_.train, *params_, [this](const Parameter& p) { return grad_sync_->owned_rows(p); });
  data_ = make_data();
  evaluator_ = std::make_unique<Evaluator>(config_, *model_, device, world);
  policy_ = parse_balance_policy(config_.balance.policy);
  monitor_ = std::make_unique<LoadMonitor>(static_cast<int>(moe_blocks_.size()), experts, static_cast<int>(config_.balance.window));
  if (topology_->ep() > 1) ep_bandwidth_ = measure_ep_bandwidth();
  if (world.rank() == 0) {
    progress_ = std::make_unique<ProgressLine>(config_.train.steps, config_.log.every, config_.log.progress);
    if (!run_dir.empty()) {
      metrics_ = std::make_unique<MetricsWriter>(run_dir);
      metrics_->write_file("config.json", config_.to_json().dump(2) + "\n");
    }
  }
  if (config_.log.trace && !run_dir_.empty()) {
    world_.barrier();  // every rank's time zero at the same moment: one time axis after merging
    trace::start(world_.rank());
  }
}

Trainer::~Trainer() {
  try {  // a run that ends in an error still leaves its timeline
    write_trace();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] %s\n", world_.rank(), e.what());
  }
}

void Trainer::write_trace() {
  if (!trace::enabled()) return;
  std::filesystem::create_directories(run_dir_ + "/trace");
  trace::write(fmt::format("{}/trace/rank_{}.json", run_dir_, world_.rank()));
}

std::unique_ptr<DataSource> Trainer::make_data() const {
  const auto seed = static_cast<std::uint64_t>(config_.train.seed);
  if (config_.data.source == "synthetic") {
    SyntheticTaskOptions o;
    o.tasks = config_.data.tasks;
    o.skew = config_.data.skew;
    o.digits = static_cast<int>(config_.data.digits);
    o.seed = seed;
    o.seq_len = config_.model.seq_len;
    return std::make_unique<SyntheticTasks>(o);
  }
  return std::make_unique<TokenFile>(config_.data.source, parse_token_file_format(config_.data.format, config_.data.source),
                                     config_.model.seq_len, seed, vocab::kSize);
}

ProcessGroup* Trainer::replica_group(const std::vector<int>& ranks) {
  if (ranks.size() < 2) return nullptr;
  auto it = replica_groups_.find(ranks);
  if (it == replica_groups_.end()) {
    // Collective over the EP group: every member calls this for the same rank sets in the
    // same order (placements are identical everywhere); non-members get nullptr.
    const int me = topology_->ep_rank();
    const bool member = std::find(ranks.begin(), ranks.end(), me) != ranks.end();
    it = replica_groups_.emplace(ranks, topology_->ep_group().split(member ? 0 : -1, me, "replicas")).first;
  }
  return it->second.get();
}

void Trainer::rebuild_grad_sync() {
  // Gradients become final block by block during backward, last block first.
  params_of_block_.assign(static_cast<std::size_t>(config_.model.n_layers), {});
  params_outside_blocks_.clear();
  for (Parameter* p : params_->all()) {
    if (p->name.rfind("layers.", 0) == 0) {
      params_of_block_[static_cast<std::size_t>(std::stoi(p->name.substr(7)))].push_back(p);
    } else {
      params_outside_blocks_.push_back(p);
    }
  }
  // Within a block, by name: every rank sharing a bucket must lay it out identically, and an
  // expert that arrived by migration was registered later here than on its other holders.
  auto by_name = [](const Parameter* a, const Parameter* b) { return a->name < b->name; };
  for (auto& block : params_of_block_) std::sort(block.begin(), block.end(), by_name);
  std::sort(params_outside_blocks_.begin(), params_outside_blocks_.end(), by_name);
  std::vector<Parameter*> ready_order;
  for (auto it = params_of_block_.rbegin(); it != params_of_block_.rend(); ++it)
    ready_order.insert(ready_order.end(), it->begin(), it->end());
  ready_order.insert(ready_order.end(), params_outside_blocks_.begin(), params_outside_blocks_.end());
  // Replica groups first, in a fixed order, on every rank of the EP group.
  std::map<std::pair<int, int>, ProcessGroup*> replicas_of;  // (block, expert) -> group
  std::map<const ProcessGroup*, bool> spans_nodes = {{&world_, topology_->nodes() > 1},
                                                     {&topology_->edp_group(), topology_->edp_spans_nodes()}};
  for (std::size_t i = 0; i < placements_.size(); ++i) {
    for (int e = 0; e < placements_[i].experts(); ++e) {
      std::vector<int> ranks;
      for (const Replica& r : placements_[i].replicas(e)) ranks.push_back(r.rank);
      replicas_of[{moe_blocks_[i], e}] = replica_group(ranks);
      spans_nodes[replicas_of[{moe_blocks_[i], e}]] = topology_->ep_ranks_span_nodes(ranks);
    }
  }
  // The new sync takes the gradients over from the old one's buckets before those are freed.
  grad_sync_ = std::make_unique<GradSync>(
      ready_order,
      [&](const Parameter& p) -> GradSync::Groups {
        // ZeRO-1 partitions each parameter over its data-parallel copies: the world for dense
        // parameters, the expert-data-parallel group for experts (replicas update alike).
        const bool shard = config_.train.shard_optimizer;
        if (p.kind == ParamKind::Dense) return {{&world_}, shard ? &world_ : nullptr};
        auto it = replicas_of.find({p.layer, p.expert});
        return {{it == replicas_of.end() ? nullptr : it->second, &topology_->edp_group()},
                shard ? &topology_->edp_group() : nullptr};
      },
      static_cast<std::size_t>(config_.parallel.bucket_mb * 1024 * 1024));
  if (optimizer_) {  // after a migration: the moments must cover exactly the rows the buckets assign
    for (const Parameter* p : params_->all()) {
      MOERUN_CHECK(optimizer_->moments(p->name).rows == grad_sync_->owned_rows(*p), RuntimeError,
                   "[zero-1] the optimizer holds rows [{}, {}) of '{}' but its bucket assigns [{}, {}) to this rank",
                   optimizer_->moments(p->name).rows.begin, optimizer_->moments(p->name).rows.end, p->name,
                   grad_sync_->owned_rows(*p).begin, grad_sync_->owned_rows(*p).end);
    }
  }
  allreduce_intra_ = allreduce_inter_ = 0;
  for (const auto& [group, bytes] : grad_sync_->payload_per_group()) (spans_nodes[group] ? allreduce_inter_ : allreduce_intra_) += bytes;
}

double Trainer::measure_ep_bandwidth() {
  // Bytes/s of one all-to-all in the EP group at about an MoE layer's message size.
  ProcessGroup& ep = topology_->ep_group();
  const std::int64_t per_peer = 1 << 18;  // floats: 1 MiB to each peer
  const auto p = static_cast<std::size_t>(ep.size());
  std::vector<float> send(p * per_peer, 1.0f), recv(send.size());
  std::vector<std::int64_t> counts(p, per_peer), displs(p);
  for (std::size_t r = 0; r < p; ++r) displs[r] = static_cast<std::int64_t>(r) * per_peer;
  std::vector<double> times;
  for (int i = 0; i < 5; ++i) {
    ep.barrier();
    const auto t = Clock::now();
    ep.all_to_all_v(send.data(), counts, displs, recv.data(), counts, displs, CommType::F32);
    times.push_back(std::chrono::duration<double>(Clock::now() - t).count());
  }
  const double bw = double(per_peer * 4) * double(p - 1) / std::max(1e-9, median(times));
  return world_.all_reduce_value(bw, ReduceOp::Min);  // every rank plans with the same number
}

std::vector<Tensor*> Trainer::expert_tensors(int layer, int expert) {
  std::vector<Tensor*> out;
  for (const std::string& name : FeedForwardSet::weight_names(config_.model, MoeLayer::expert_prefix(layer), expert)) {
    AdamW::Moments& m = optimizer_->moments(name);
    out.insert(out.end(), {&params_->get(name).value, &m.m, &m.v});
  }
  return out;
}

std::vector<Tensor*> Trainer::create_expert(int layer, int expert) {
  std::vector<Tensor*> out;
  const std::int64_t d = config_.model.d_model, ff = config_.model.d_ff;
  const auto names = FeedForwardSet::weight_names(config_.model, MoeLayer::expert_prefix(layer), expert);
  auto shape_of = [&](const std::string& name) { return name.ends_with(".w2") ? Shape{ff, d} : Shape{d, ff}; };
  // Under ZeRO-1 the expert's moments are this rank's rows of its own bucket, the same rows
  // its sender holds (same expert-data-parallel rank): the optimizer shard moves as it is.
  std::map<std::string, RowRange> rows;
  ProcessGroup& edp = topology_->edp_group();
  std::vector<std::string> in_bucket_order = names;
  std::sort(in_bucket_order.begin(), in_bucket_order.end());
  std::vector<Shape> shapes;
  for (const std::string& name : in_bucket_order) shapes.push_back(shape_of(name));
  const bool sharded = config_.train.shard_optimizer && edp.size() > 1;
  const auto shard = sharded ? GradSync::expert_shard(shapes, edp.size(), edp.rank()) : std::vector<RowRange>{};
  for (std::size_t i = 0; i < in_bucket_order.size(); ++i)
    rows[in_bucket_order[i]] = sharded ? shard[i] : RowRange{0, shapes[i][0]};
  for (const std::string& name : names) {
    Parameter& p = params_->add(name, shape_of(name), Init::Zeros, ParamKind::Expert, layer, expert);
    AdamW::Moments& m = optimizer_->add_moments(name, shape_of(name), rows.at(name));
    out.insert(out.end(), {&p.value, &m.m, &m.v});
  }
  return out;
}

void Trainer::drop_expert(int layer, int expert) {
  for (const std::string& name : FeedForwardSet::weight_names(config_.model, MoeLayer::expert_prefix(layer), expert)) {
    params_->remove(name);
    optimizer_->drop_moments(name);
  }
}

double Trainer::apply_placements(const std::vector<Placement>& placements) {
  const trace::Scope span("rebalance", "migrate experts");
  const auto start = Clock::now();
  MOERUN_CHECK(placements.size() == placements_.size(), RuntimeError,
               "[rebalance] {} placements for {} MoE layers (expert parallelism needs parallel.ep > 1)",
               placements.size(), placements_.size());
  migrate_experts(topology_->ep_group(), moe_blocks_, placements_, placements, *this);
  for (std::size_t i = 0; i < moe_blocks_.size(); ++i) {
    static_cast<AllToAllDispatcher&>(*dispatchers_[static_cast<std::size_t>(moe_blocks_[i])]).set_placement(placements[i]);
    model_->moe_layer(moe_blocks_[i]).attach_local_experts(*params_);
  }
  placements_ = placements;
  rebuild_grad_sync();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void Trainer::check_finite(std::int64_t step, double loss) const {
  const Parameter* first_bad = nullptr;
  std::int64_t bad = 0;
  for (const Parameter* p : params_->all()) {
    // Only the owned rows hold complete sums (all rows unless ZeRO-1 shards the parameter).
    const RowRange rows = grad_sync_->owned_rows(*p);
    if (rows.empty()) continue;
    const std::int64_t n = kernels::count_nonfinite(p->grad.rows(rows.begin, rows.end));
    if (n > 0 && first_bad == nullptr) {
      first_bad = p;
      bad = n;
    }
  }
  // Every rank must stop together: share the verdict.
  const std::int64_t any_bad = world_.all_reduce_value(std::int64_t{first_bad != nullptr ? 1 : 0}, ReduceOp::Max);
  if (std::isfinite(loss) && any_bad == 0) return;
  if (first_bad == nullptr && std::isfinite(loss)) {
    MOERUN_THROW(RuntimeError, "[nan guard] step {}: another rank found non-finite gradients (see its message); training "
                 "stopped before the update, nothing of this state is saved", step);
  }
  MOERUN_THROW(RuntimeError,
               "[nan guard] step {}: the loss is {}{}; training stopped before the update, nothing of this state is "
               "saved. Lower train.lr, raise train.warmup_steps, or check the data",
               step, loss,
               first_bad ? fmt::format(" and the gradient of '{}' has {} non-finite values (the first parameter that does)",
                                       first_bad->name, bad)
                         : std::string());
}

StepResult Trainer::train_step(std::int64_t step) {
  const trace::Scope span("step", "step", static_cast<int>(step));
  const auto start = Clock::now();
  const std::int64_t m = config_.train.micro_batch, t = config_.model.seq_len;
  const std::int64_t local_micro = config_.micro_batches_per_rank(world_.size());
  const std::int64_t first_sequence = world_.rank() * local_micro * m;
  // Load this rank's micro-batches; the global target count scales the loss gradient.
  std::vector<TokenBatch> batches(static_cast<std::size_t>(local_micro));
  std::int64_t local_targets = 0;
  for (std::int64_t i = 0; i < local_micro; ++i) {
    data_->training_batch(step, first_sequence + i * m, m, batches[static_cast<std::size_t>(i)]);
    for (std::int32_t y : batches[static_cast<std::size_t>(i)].targets) local_targets += y != vocab::kIgnore;
  }
  const std::int64_t global_targets = std::max<std::int64_t>(1, world_.all_reduce_value(local_targets));
  const LossScales scales{.ce_scale = 1.0 / double(global_targets),
                          .aux_scale = 1.0 / double(config_.micro_batches_per_step())};
  params_->zero_grads();
  for (int block : moe_blocks_) model_->moe_layer(block).reset_expert_seconds();
  const std::size_t moe_layers = moe_blocks_.size();
  const auto experts = static_cast<std::size_t>(config_.model.experts);
  // sums: ce, aux, z, dropped, copies, expert seconds, then routed and kept copies per (layer, expert)
  const std::size_t kept_at = 6 + moe_layers * experts;
  std::vector<double> sums(6 + 2 * moe_layers * experts, 0.0);
  for (std::size_t i = 0; i < batches.size(); ++i) {
    const TokenBatch& batch = batches[i];
    const trace::Scope micro_span("step", "micro-batch", static_cast<int>(i));
    Tensor inputs = Tensor::from_host(device_, {m * t}, batch.inputs);
    Tensor targets = Tensor::from_host(device_, {m * t}, batch.targets);
    if (i + 1 == batches.size()) {  // the last backward of the step: start reducing as blocks finish
      model_->set_backward_hook([this](int block) {
        const auto& done = block >= 0 ? params_of_block_[static_cast<std::size_t>(block)] : params_outside_blocks_;
        for (const Parameter* p : done) grad_sync_->mark_ready(*p);
      });
    }
    const MicroBatchLoss l = forward_backward(*model_, inputs, targets, m, scales);
    sums[0] += l.ce_sum;
    sums[1] += l.aux;
    sums[2] += l.z;
    const auto stats = model_->moe_stats();
    for (std::size_t layer = 0; layer < stats.size(); ++layer) {
      sums[3] += double(stats[layer]->dropped);
      sums[4] += double(stats[layer]->copies);
      for (std::size_t e = 0; e < experts; ++e) {
        sums[6 + layer * experts + e] += double(stats[layer]->assigned_per_expert[e]);
        sums[kept_at + layer * experts + e] += double(stats[layer]->kept_per_expert[e]);
      }
    }
  }
  model_->set_backward_hook(nullptr);
  StepResult r;
  r.allreduce_ms = 1000.0 * grad_sync_->finish();
  double my_expert_seconds = 0.0;
  for (int block : moe_blocks_) my_expert_seconds += model_->moe_layer(block).stats().expert_seconds;
  sums[5] = my_expert_seconds;
  world_.all_reduce(std::span<double>(sums));
  r.loss = sums[0] / double(global_targets);
  r.aux_loss = sums[1] / double(config_.micro_batches_per_step());
  r.z_loss = sums[2] / double(config_.micro_batches_per_step());
  r.dropped_frac = sums[4] > 0 ? sums[3] / sums[4] : 0.0;
  r.expert_counts.assign(moe_layers, std::vector<std::int64_t>(experts));
  r.expert_kept.assign(moe_layers, std::vector<std::int64_t>(experts));
  for (std::size_t layer = 0; layer < moe_layers; ++layer) {
    for (std::size_t e = 0; e < experts; ++e) {
      r.expert_counts[layer][e] = static_cast<std::int64_t>(sums[6 + layer * experts + e]);
      r.expert_kept[layer][e] = static_cast<std::int64_t>(sums[kept_at + layer * experts + e]);
    }
  }
  // Per expert-parallel group: every group sees 1 / dp of the global copies.
  const double dp = double(topology_->dp());
  r.expert_seconds_total = sums[5] / dp;
  r.kept_copies = (sums[4] - sums[3]) / dp;
  const double max_expert_seconds = topology_->ep_group().all_reduce_value(my_expert_seconds, ReduceOp::Max);
  const double mean_expert_seconds = r.expert_seconds_total / double(topology_->ep());
  r.expert_time_imbalance = mean_expert_seconds > 0 ? max_expert_seconds / mean_expert_seconds : 1.0;
  // The load that costs time is what the experts process: copies kept after the capacity cut.
  std::vector<std::vector<double>> group_counts(moe_layers, std::vector<double>(experts));
  for (std::size_t layer = 0; layer < moe_layers; ++layer)
    for (std::size_t e = 0; e < experts; ++e) group_counts[layer][e] = double(r.expert_kept[layer][e]) / dp;
  monitor_->record(group_counts);
  if (!placements_.empty()) {
    r.imbalance = monitor_->imbalance(placements_, /*latest=*/true);
    const auto ep = static_cast<std::size_t>(topology_->ep());
    r.rank_expert_seconds.assign(ep, 0.0);
    topology_->ep_group().all_gather(&my_expert_seconds, r.rank_expert_seconds.data(), 1, CommType::F64);
    r.rank_copies.assign(ep, 0.0);
    for (std::size_t layer = 0; layer < moe_layers; ++layer) {
      const auto per_rank = expected_rank_loads(group_counts[layer], placements_[layer]);
      for (std::size_t q = 0; q < ep; ++q) r.rank_copies[q] += per_rank[q];
    }
  }
  const trace::Scope optimizer_span("optimizer", "clip and update");
  check_finite(step, r.loss + r.aux_loss + r.z_loss);
  std::vector<Tensor*> grads;
  for (Parameter* p : params_->all()) grads.push_back(&p->grad);
  r.grad_norm = global_grad_norm();
  kernels::clip_by_norm(grads, r.grad_norm, config_.train.grad_clip);
  r.lr = learning_rate(config_.train, step);
  optimizer_->step(step, r.lr);
  if (config_.train.shard_optimizer) {  // ZeRO-1: every rank gets the rows the others updated
    const auto gather_start = Clock::now();
    grad_sync_->gather_parameters();
    r.allreduce_ms += std::chrono::duration<double, std::milli>(Clock::now() - gather_start).count();
  }
  device_.synchronize();
  r.step_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  DispatchStats a2a;
  for (auto& d : dispatchers_) {
    const DispatchStats s = d->take_stats();
    a2a.seconds += s.seconds;
    a2a.bytes_sent += s.bytes_sent;
    a2a.bytes_inter_node += s.bytes_inter_node;
    a2a.messages_intra_node += s.messages_intra_node;
    a2a.messages_inter_node += s.messages_inter_node;
  }
  r.a2a_ms = 1000.0 * a2a.seconds;
  r.a2a_bytes = a2a.bytes_sent;
  r.a2a_bytes_inter_node = a2a.bytes_inter_node;
  r.a2a_messages_intra_node = a2a.messages_intra_node;
  r.a2a_messages_inter_node = a2a.messages_inter_node;
  std::int64_t world_totals[3] = {a2a.bytes_inter_node, a2a.messages_intra_node, a2a.messages_inter_node};
  world_.all_reduce(std::span<std::int64_t>(world_totals));
  r.world_a2a_bytes_inter_node = world_totals[0];
  r.world_a2a_messages_intra_node = world_totals[1];
  r.world_a2a_messages_inter_node = world_totals[2];
  r.allreduce_bytes_intra_node = allreduce_intra_;
  r.allreduce_bytes_inter_node = allreduce_inter_;
  r.compute_ms = r.step_ms - r.a2a_ms - r.allreduce_ms;
  r.tokens = config_.train.global_batch * t;
  return r;
}

double Trainer::global_grad_norm() const {
  // A replicated expert's (identical) gradient lives on several ranks: count it once.
  auto copies_of = [&](const Parameter& p) {
    if (p.kind == ParamKind::Dense || placements_.empty()) return 1.0;
    const auto it = std::find(moe_blocks_.begin(), moe_blocks_.end(), p.layer);
    return double(placements_[static_cast<std::size_t>(it - moe_blocks_.begin())].replicas(p.expert).size());
  };
  if (config_.train.shard_optimizer) {
    // ZeRO-1: each rank holds the complete sum of its own rows only. Every row has one owner
    // per copy (an expert's replicas own the same rows), so the world's sum of owned squares,
    // each divided by its copies, counts every element once.
    double sum = 0.0;
    for (const Parameter* p : params_->all()) {
      const RowRange rows = grad_sync_->owned_rows(*p);
      if (rows.empty()) continue;
      sum += kernels::sum_squares(p->grad.rows(rows.begin, rows.end)) / copies_of(*p);
    }
    return std::sqrt(world_.all_reduce_value(sum));
  }
  double sums[2] = {0.0, 0.0};  // dense, expert
  for (const Parameter* p : params_->all()) {
    const double sq = kernels::sum_squares(p->grad);
    if (p->kind == ParamKind::Dense) {
      sums[0] += sq;
    } else {
      sums[1] += sq / copies_of(*p);
    }
  }
  // Each EP group holds every expert: sum the group's parts.
  topology_->ep_group().all_reduce(std::span<double>(&sums[1], 1));
  return std::sqrt(sums[0] + sums[1]);
}

bool Trainer::maybe_rebalance(std::int64_t step, const StepResult& last) {
  if (placements_.empty() || policy_ == BalancePolicy::None) return false;
  // Keep the cost model's measured inputs current, every step.
  const double alpha = 2.0 / (double(config_.balance.window) + 1.0);
  const double spc = last.kept_copies > 0 ? last.expert_seconds_total / last.kept_copies : 0.0;
  seconds_per_copy_ = seconds_per_copy_ == 0.0 ? spc : (1 - alpha) * seconds_per_copy_ + alpha * spc;
  if (!last.rank_copies.empty()) {  // across-rank regression of expert seconds on copies
    const double n = double(last.rank_copies.size());
    double mx = 0, my = 0;
    for (std::size_t q = 0; q < last.rank_copies.size(); ++q) mx += last.rank_copies[q] / n, my += last.rank_expert_seconds[q] / n;
    double sxy = 0, sxx = 0;
    for (std::size_t q = 0; q < last.rank_copies.size(); ++q) {
      sxy += (last.rank_copies[q] - mx) * (last.rank_expert_seconds[q] - my);
      sxx += (last.rank_copies[q] - mx) * (last.rank_copies[q] - mx);
    }
    cov_copies_seconds_ = (1 - alpha) * cov_copies_seconds_ + alpha * sxy;
    var_copies_ = (1 - alpha) * var_copies_ + alpha * sxx;
  }
  step_seconds_avg_ = step_seconds_avg_ == 0.0 ? last.step_ms / 1000 : (1 - alpha) * step_seconds_avg_ + alpha * last.step_ms / 1000;
  if (pending_) {  // report the measured effect of the last decision next to its prediction
    pending_->measured.push_back(last.step_ms / 1000);
    if (static_cast<std::int64_t>(pending_->measured.size()) >= std::min<std::int64_t>(5, config_.balance.interval)) {
      const double measured = median(pending_->measured);
      if (metrics_) {
        metrics_->write_event({{"event", "rebalance_measured"}, {"step", step}, {"decision_step", pending_->decision_step},
                               {"predicted_step_ms", 1000 * pending_->predicted_seconds}, {"measured_step_ms", 1000 * measured},
                               {"prediction_error", measured > 0 ? (pending_->predicted_seconds - measured) / measured : 0.0}});
      }
      pending_.reset();
    }
  }
  if (step % config_.balance.interval != 0 || step == config_.train.steps) return false;
  const trace::Scope span("rebalance", "rebalance decision");
  const auto rebalance_start = Clock::now();
  PlannerInput in;
  in.loads = monitor_->average();
  // The last `window` steps one by one: a placement must help them, not only their average.
  const auto& history = monitor_->history();
  const auto recent = static_cast<std::ptrdiff_t>(std::min<std::size_t>(history.size(), static_cast<std::size_t>(config_.balance.window)));
  in.recent_loads.assign(history.end() - recent, history.end());
  in.current = placements_;
  in.policy = policy_;
  in.threshold = config_.balance.threshold;
  in.interval = static_cast<int>(config_.balance.interval);
  in.force = config_.balance.force;
  in.min_gain = config_.balance.min_gain;
  in.max_experts_per_rank = static_cast<int>(config_.balance.max_experts_per_rank > 0
                                                  ? config_.balance.max_experts_per_rank
                                                  : config_.model.experts / config_.parallel.ep + 1);
  const double d = double(config_.model.d_model), ff = double(config_.model.d_ff);
  const double matrices = config_.model.expert_type == ExpertType::SwiGlu ? 3.0 : 2.0;
  // What moving copies between ranks changes is the marginal cost of a copy, not the average:
  // part of each rank's expert time does not shrink with fewer copies (smaller groups run at a
  // lower GFLOP/s). Use the regression slope when the loads were uneven enough to measure it.
  in.cost.seconds_per_copy = var_copies_ > 0 ? std::clamp(cov_copies_seconds_ / var_copies_, 0.0, seconds_per_copy_)
                                             : seconds_per_copy_;
  in.cost.bytes_per_copy = 4.0 * d * sizeof(float);  // dispatch and combine, forward and backward
  in.cost.bandwidth = ep_bandwidth_;
  // Migrations cost more than their bytes (allocation, new communicators): use what the
  // previous ones achieved once there is one.
  in.cost.migration_bandwidth = migration_bandwidth_ > 0 ? migration_bandwidth_ : ep_bandwidth_;
  in.cost.expert_state_bytes = 3.0 * matrices * d * ff * sizeof(float);  // weights and two moments
  // Calibrate: the rest of the step is whatever the model does not explain now.
  CostModel probe = in.cost;
  probe.fixed_seconds = 0.0;
  in.cost.fixed_seconds = std::max(0.0, step_seconds_avg_ - predict(in.loads, placements_, probe).step_seconds);
  // Identical inputs everywhere: rank 0's numbers decide (broadcast), so every rank plans alike.
  std::vector<double> wire;
  for (const auto& layer : in.loads) wire.insert(wire.end(), layer.begin(), layer.end());
  for (const auto& step_loads : in.recent_loads)
    for (const auto& layer : step_loads) wire.insert(wire.end(), layer.begin(), layer.end());
  wire.insert(wire.end(), {in.cost.seconds_per_copy, in.cost.fixed_seconds, in.cost.bandwidth, in.cost.migration_bandwidth});
  world_.broadcast(wire.data(), static_cast<std::int64_t>(wire.size()), CommType::F64, 0);
  std::size_t at = 0;
  for (auto& layer : in.loads)
    for (double& x : layer) x = wire[at++];
  for (auto& step_loads : in.recent_loads)
    for (auto& layer : step_loads)
      for (double& x : layer) x = wire[at++];
  in.cost.seconds_per_copy = wire[at++];
  in.cost.fixed_seconds = wire[at++];
  in.cost.bandwidth = wire[at++];
  in.cost.migration_bandwidth = wire[at++];
  const PlannerDecision decision = plan_placement(in);
  double migrate_seconds = 0.0;
  if (decision.apply) {
    migrate_seconds = apply_placements(decision.placements);
    if (decision.migrate_bytes > 0) {  // the slowest rank's time, identical everywhere
      const double slowest = world_.all_reduce_value(migrate_seconds, ReduceOp::Max);
      const double achieved = decision.migrate_bytes / std::max(1e-6, slowest);
      migration_bandwidth_ = migration_bandwidth_ == 0.0 ? achieved : 0.5 * (migration_bandwidth_ + achieved);
    }
    ++rebalances_;
    pending_ = PendingCheck{step, decision.after.step_seconds, {}};
  }
  if (metrics_) {
    nlohmann::json old_p = nlohmann::json::array(), new_p = nlohmann::json::array();
    for (const auto& p : in.current) old_p.push_back(p.to_json());
    for (const auto& p : decision.placements) new_p.push_back(p.to_json());
    metrics_->write_event({{"event", "rebalance"}, {"step", step}, {"policy", balance_policy_name(policy_)},
                           {"chosen", balance_policy_name(decision.chosen)}, {"applied", decision.apply},
                           {"reason", decision.reason}, {"old_placement", old_p}, {"new_placement", new_p},
                           {"predicted_step_ms_before", 1000 * decision.before.step_seconds},
                           {"predicted_step_ms_after", 1000 * decision.after.step_seconds},
                           {"imbalance_before", decision.before.imbalance}, {"imbalance_after", decision.after.imbalance},
                           {"bytes_moved", decision.migrate_bytes}, {"predicted_migrate_ms", 1000 * decision.migrate_seconds},
                           {"migrate_ms", 1000 * migrate_seconds},
                           {"rebalance_ms", 1000 * std::chrono::duration<double>(Clock::now() - rebalance_start).count()}});
  }
  if (decision.apply && world_.rank() == 0) {
    progress_->message(fmt::format("rebalance at step {} ({}): imbalance {:.2f} -> {:.2f} predicted, step {:.1f} -> {:.1f} ms "
                                   "predicted, {} moved",
                                   step, balance_policy_name(decision.chosen), decision.before.imbalance,
                                   decision.after.imbalance, 1000 * decision.before.step_seconds,
                                   1000 * decision.after.step_seconds, human_bytes(decision.migrate_bytes)));
  }
  return decision.apply;
}

void Trainer::log_eval(std::int64_t step, const EvalResult& r) {
  if (world_.rank() != 0) return;
  std::string text = fmt::format("eval step {}: held-out loss {:.4f}", step, r.heldout_loss);
  nlohmann::json j{{"step", step}, {"eval", true}, {"heldout_loss", r.heldout_loss}};
  for (std::size_t i = 0; i < r.tasks.size(); ++i) {
    text += fmt::format(" | {} {:.1f}%", r.tasks[i], 100.0 * r.accuracy[i]);
    j["accuracy"][r.tasks[i]] = r.accuracy[i];
  }
  progress_->message(text);
  if (metrics_) metrics_->write(j);
}

TrainSummary Trainer::run() {
  TrainSummary summary;
  const auto* tasks = dynamic_cast<const SyntheticTasks*>(data_.get());
  if (world_.rank() == 0) {
    progress_->message(fmt::format("moerun: {} parameters on rank 0 ({} layers, {} experts, top-{}), data: {}, {} rank(s) "
                                   "= dp {} x ep {}, {} gradient bucket(s){}, recompute {}, {} token exchange, device {}",
                                   params_->count_elements(), config_.model.n_layers, config_.model.experts,
                                   config_.model.top_k, data_->describe(), world_.size(), topology_->dp(),
                                   topology_->ep(), grad_sync_->buckets(),
                                   config_.train.shard_optimizer ? " (ZeRO-1: optimizer state sharded)" : "",
                                   config_.train.recompute,
                                   dispatchers_.empty() || topology_->ep() == 1 ? "no"
                                   : static_cast<const AllToAllDispatcher&>(*dispatchers_.front()).hierarchical() ? "hierarchical"
                                                                                                                   : "flat",
                                   device_.name()));
    progress_->message(fmt::format("memory per rank, estimated: peak {} = parameters {} + gradients {} + optimizer {} + "
                                   "activations {} + temporaries {} + communication {} (moerun --dry-run explains)",
                                   human_bytes(double(memory_estimate_.peak)), human_bytes(double(memory_estimate_.parameters)),
                                   human_bytes(double(memory_estimate_.gradients)), human_bytes(double(memory_estimate_.optimizer)),
                                   human_bytes(double(memory_estimate_.activations)), human_bytes(double(memory_estimate_.temporaries)),
                                   human_bytes(double(memory_estimate_.communication))));
    if (policy_ != BalancePolicy::None && placements_.empty())
      progress_->message("note: balance.policy has no effect with parallel.ep = 1 (every rank holds every expert)");
    if (config_.model.router_zipf > 0)
      progress_->message(fmt::format("note: bench.router_zipf = {} biases the router (benchmark setting, changes the math)",
                                     config_.model.router_zipf));
  }
  double timed_ms = 0.0;
  std::int64_t timed_tokens = 0;
  std::int64_t last_saved = start_step_;
  for (std::int64_t step = start_step_ + 1; step <= config_.train.steps; ++step) {
    const StepResult r = train_step(step);
    summary.losses.push_back(r.loss);
    if (step > start_step_ + 1) {
      timed_ms += r.step_ms;
      timed_tokens += r.tokens;
    }
    const double tokens_per_s = double(r.tokens) / (r.step_ms / 1000.0);
    const double imbalance = r.imbalance.empty() ? 1.0 : *std::max_element(r.imbalance.begin(), r.imbalance.end());
    if (world_.rank() == 0) {
      progress_->update(step, fmt::format("loss {:.4f} | aux {:.4f} | {:.0f} tok/s | drop {:.1f}% | imb {:.2f}", r.loss,
                                          r.aux_loss, tokens_per_s, 100.0 * r.dropped_frac, imbalance));
      if (metrics_) {
        metrics_->write({{"step", step}, {"loss", r.loss}, {"aux_loss", r.aux_loss}, {"z_loss", r.z_loss},
                         {"lr", r.lr}, {"grad_norm", r.grad_norm}, {"tokens_per_s", tokens_per_s},
                         {"step_ms", r.step_ms}, {"compute_ms", r.compute_ms}, {"a2a_ms", r.a2a_ms},
                         {"allreduce_ms", r.allreduce_ms}, {"a2a_bytes", r.a2a_bytes}, {"dropped_frac", r.dropped_frac},
                         {"comm", {{"a2a_bytes_intra_node", r.a2a_bytes - r.a2a_bytes_inter_node},
                                   {"a2a_bytes_inter_node", r.a2a_bytes_inter_node},
                                   {"a2a_messages_intra_node", r.a2a_messages_intra_node},
                                   {"a2a_messages_inter_node", r.a2a_messages_inter_node},
                                   {"allreduce_bytes_intra_node", r.allreduce_bytes_intra_node},
                                   {"allreduce_bytes_inter_node", r.allreduce_bytes_inter_node},
                                   {"world", {{"a2a_bytes_inter_node", r.world_a2a_bytes_inter_node},
                                              {"a2a_messages_intra_node", r.world_a2a_messages_intra_node},
                                              {"a2a_messages_inter_node", r.world_a2a_messages_inter_node}}}}},
                         {"imbalance", imbalance}, {"imbalance_layers", r.imbalance},
                         {"expert_time_imbalance", r.expert_time_imbalance}, {"expert_counts", r.expert_counts},
                         {"expert_kept", r.expert_kept}});
      }
    }
    maybe_rebalance(step, r);
    if (!run_dir_.empty() && config_.checkpoint.every > 0 && step % config_.checkpoint.every == 0) {
      save_checkpoint(step);
      last_saved = step;
    }
    // A signal on any rank stops every rank after this step, with a checkpoint.
    const std::int64_t stop = world_.all_reduce_value(std::int64_t{checkpoint_signal_received() ? 1 : 0}, ReduceOp::Max);
    if (stop != 0) {
      if (!run_dir_.empty() && last_saved != step) save_checkpoint(step);
      if (world_.rank() == 0) progress_->message(fmt::format("signal received: checkpoint written after step {}, stopping", step));
      summary.stopped_by_signal = true;
      return summary;
    }
    if (config_.eval.every > 0 && step % config_.eval.every == 0 && step != config_.train.steps) {
      log_eval(step, evaluator_->run(*data_, tasks));
    }
  }
  if (!run_dir_.empty() && last_saved != config_.train.steps && start_step_ < config_.train.steps)
    save_checkpoint(config_.train.steps);
  summary.final_eval = evaluator_->run(*data_, tasks);
  log_eval(config_.train.steps, summary.final_eval);
  if (trace::enabled()) {
    write_trace();
    if (world_.rank() == 0)
      progress_->message(fmt::format("trace: {0}/trace/rank_<r>.json; one file for Perfetto: launch/merge_traces.py {0}", run_dir_));
  }
  summary.tokens_per_s = timed_ms > 0 ? double(timed_tokens) / (timed_ms / 1000.0) : 0.0;
  summary.rebalances = rebalances_;
  // The busiest rank's memory: what a layout must fit.
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const std::int64_t peak_device = world_.all_reduce_value(static_cast<std::int64_t>(device_.memory_stats().peak_bytes), ReduceOp::Max);
  const std::int64_t peak_rss = world_.all_reduce_value(std::int64_t{usage.ru_maxrss} * 1024, ReduceOp::Max);
  const std::int64_t optimizer_bytes = world_.all_reduce_value(
      optimizer_->state_elements() * static_cast<std::int64_t>(sizeof(float)), ReduceOp::Max);
  if (world_.rank() == 0) {
    progress_->finish();
    progress_->message(fmt::format("done: {} steps, first loss {:.4f}, last loss {:.4f}, {:.0f} tokens/s, {} rebalance(s); "
                                   "peak device memory {} (estimated {}, {:+.1f}%), optimizer state {}, peak RSS {} (the "
                                   "largest rank's)",
                                   config_.train.steps, summary.losses.empty() ? 0.0 : summary.losses.front(),
                                   summary.losses.empty() ? 0.0 : summary.losses.back(), summary.tokens_per_s,
                                   rebalances_, human_bytes(double(peak_device)), human_bytes(double(memory_estimate_.peak)),
                                   100.0 * (double(memory_estimate_.peak) - double(peak_device)) / double(std::max<std::int64_t>(1, peak_device)),
                                   human_bytes(double(optimizer_bytes)), human_bytes(double(peak_rss))));
    if (metrics_) {
      metrics_->write({{"summary", true}, {"steps", config_.train.steps}, {"tokens_per_s", summary.tokens_per_s},
                       {"rebalances", rebalances_}, {"peak_device_bytes", peak_device},
                       {"memory_estimate", memory_estimate_.to_json()}, {"optimizer_state_bytes", optimizer_bytes},
                       {"peak_rss_bytes", peak_rss}});
    }
  }
  return summary;
}

std::string Trainer::save_checkpoint(std::int64_t step) {
  const trace::Scope span("checkpoint", "checkpoint", static_cast<int>(step));
  const auto start = Clock::now();
  ckpt::CheckpointContent content;
  std::map<std::string, std::size_t> index_of;
  auto dataset = [&](const std::string& path, Shape shape, bool stacked) {
    auto [it, fresh] = index_of.emplace(path, content.datasets.size());
    if (fresh) content.datasets.push_back({path, std::move(shape), stacked});
    return it->second;
  };
  // The datasets: the same list on every rank, from the model's shape, not from what a rank holds.
  const bool dense_writer = world_.rank() == 0;
  const bool expert_writer_group = topology_->dp_rank() == 0;  // one EP group writes the experts
  std::vector<const Parameter*> dense;
  for (const Parameter* p : params_->all())
    if (p->kind == ParamKind::Dense) dense.push_back(p);
  std::sort(dense.begin(), dense.end(), [](const Parameter* a, const Parameter* b) { return a->name < b->name; });
  // Optimizer moments under ZeRO-1: each rank writes the rows it owns (its rows of the
  // logical tensor), so the file holds the same logical tensors as without sharding.
  auto moment_of = [&](const std::string& root, const std::string& name) -> const Tensor* {
    AdamW::Moments& m = optimizer_->moments(name);
    return root == "/optimizer/m" ? &m.m : &m.v;
  };
  for (const std::string root : {"/model", "/optimizer/m", "/optimizer/v"}) {
    const bool moments = root != "/model";
    for (const Parameter* p : dense) {
      const std::size_t i = dataset(ckpt::dataset_for(root, p->name).path, p->value.shape(), false);
      if (moments && grad_sync_->sharded(*p)) {
        const RowRange rows = grad_sync_->owned_rows(*p);
        if (!rows.empty()) content.pieces.push_back({i, -1, moment_of(root, p->name), rows.begin});
        continue;
      }
      if (dense_writer) content.pieces.push_back({i, -1, moments ? moment_of(root, p->name) : &p->value});
    }
    for (std::size_t li = 0; li < moe_blocks_.size(); ++li) {
      const int block = moe_blocks_[li];
      const auto names0 = FeedForwardSet::weight_names(config_.model, MoeLayer::expert_prefix(block), 0);
      for (std::size_t w = 0; w < names0.size(); ++w) {
        const Shape one = names0[w].ends_with(".w2") ? Shape{config_.model.d_ff, config_.model.d_model}
                                                     : Shape{config_.model.d_model, config_.model.d_ff};
        Shape stacked{config_.model.experts};
        stacked.insert(stacked.end(), one.begin(), one.end());
        const std::size_t i = dataset(ckpt::dataset_for(root, names0[w]).path, stacked, true);
        const auto& local = dispatchers_[static_cast<std::size_t>(topology_->ep() == 1 ? 0 : block)]->local_experts();
        for (int e : local) {
          const bool first_holder = placements_.empty() || placements_[li].replicas(e).front().rank == topology_->ep_rank();
          if (!first_holder) continue;
          const std::string name = FeedForwardSet::weight_names(config_.model, MoeLayer::expert_prefix(block), e)[w];
          const Parameter& p = params_->get(name);
          if (moments && grad_sync_->sharded(p)) {  // every EP group writes its rows
            const RowRange rows = grad_sync_->owned_rows(p);
            if (!rows.empty()) content.pieces.push_back({i, e, moment_of(root, name), rows.begin});
            continue;
          }
          if (expert_writer_group) content.pieces.push_back({i, e, moments ? moment_of(root, name) : &p.value});
        }
      }
    }
  }
  content.string_attributes["format"] = ckpt::kFormatName;
  content.int_attributes["format_version"] = ckpt::kFormatVersion;
  content.int_attributes["step"] = step;
  content.int_attributes["tokens_seen"] = step * config_.train.global_batch * config_.model.seq_len;
  content.int_attributes["data_step"] = step;  // the data of step s is a function of (seed, s): nothing else to save
  content.int_attributes["seed"] = config_.train.seed;
  content.int_attributes["world_size"] = world_.size();
  content.int_attributes["dp"] = topology_->dp();
  content.int_attributes["ep"] = topology_->ep();
  content.int_attributes["rebalances"] = rebalances_;
  content.string_attributes["config"] = config_.to_json().dump();
  nlohmann::json placement = nlohmann::json::array();
  for (const Placement& p : placements_) placement.push_back(p.to_json());
  content.string_attributes["placement"] = placement.dump();
  nlohmann::json history = nlohmann::json::array();
  for (const auto& h : monitor_->history()) history.push_back(h);
  content.string_attributes["load_average"] = nlohmann::json(monitor_->average()).dump();
  content.string_attributes["load_history"] = history.dump();
  const auto* mpi = dynamic_cast<const MpiGroup*>(&world_);
  const std::string path = ckpt::write_checkpoint(world_, mpi ? mpi->comm() : MPI_COMM_NULL, run_dir_ + "/checkpoints", step,
                                                  content, static_cast<int>(config_.checkpoint.keep));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (metrics_) metrics_->write_event({{"event", "checkpoint"}, {"step", step}, {"path", path}, {"seconds", seconds}});
  return path;
}

void Trainer::restore(const std::string& dir_or_file) {
  const std::string path = ckpt::resolve_checkpoint(dir_or_file);
  const ckpt::CheckpointReader file(path);
  const std::int64_t step = file.int_attribute("step");
  // The placement travels with the checkpoint when the expert-parallel shape is the same.
  if (!placements_.empty() && file.int_attribute("ep") == topology_->ep()) {
    const auto saved = nlohmann::json::parse(file.string_attribute("placement"));
    if (saved.size() == placements_.size()) {
      std::vector<Placement> restored;
      for (const auto& layer : saved) {
        std::vector<std::vector<Replica>> reps;
        for (const auto& expert : layer) {
          reps.emplace_back();
          for (const auto& r : expert) reps.back().push_back({r.at("rank").get<int>(), r.at("share").get<std::int64_t>()});
        }
        restored.emplace_back(topology_->ep(), std::move(reps));
      }
      apply_placements(restored);
    }
  }
  // `into` holds rows [first_row, ...) of the logical tensor: all of it, or this rank's rows of
  // a ZeRO-1 moment.
  auto load = [&](const std::string& root, const Parameter& p, Tensor& into, std::int64_t first_row) {
    const ckpt::DatasetRef ref = ckpt::dataset_for(root, p.name);
    MOERUN_CHECK(file.has(ref.path), CheckpointError,
                 "[resume] '{}' has no dataset '{}' for parameter '{}': it was written for a different model; resume "
                 "with the config stored in it (moerun-ckpt info {})",
                 path, ref.path, p.name, path);
    Shape want = p.value.shape();
    if (ref.expert_row) want.insert(want.begin(), config_.model.experts);
    const Shape have = file.shape(ref.path);
    MOERUN_CHECK(have == want, CheckpointError,
                 "[resume] model shape differs: '{}' is {} in '{}' but the config gives {}; resume with the config "
                 "stored in the checkpoint (moerun-ckpt info {}) or start a new run",
                 ref.path, shape_string(have), path, shape_string(want), path);
    const std::vector<float> all = ref.expert_row ? file.read_row(ref.path, *ref.expert_row) : file.read(ref.path);
    const std::int64_t width = p.value.numel() / std::max<std::int64_t>(1, p.value.shape().empty() ? 1 : p.value.dim(0));
    into.copy_from_host(std::span<const float>(all).subspan(static_cast<std::size_t>(first_row * width),
                                                            static_cast<std::size_t>(into.numel())));
  };
  for (Parameter* p : params_->all()) {
    AdamW::Moments& moments = optimizer_->moments(p->name);
    load("/model", *p, p->value, 0);
    load("/optimizer/m", *p, moments.m, moments.rows.begin);
    load("/optimizer/v", *p, moments.v, moments.rows.begin);
  }
  const auto average = nlohmann::json::parse(file.string_attribute("load_average"));
  const auto history = nlohmann::json::parse(file.string_attribute("load_history"));
  if (average.size() == monitor_->average().size()) {
    *monitor_ = LoadMonitor(static_cast<int>(moe_blocks_.size()), static_cast<int>(config_.model.experts),
                            static_cast<int>(config_.balance.window));
    for (const auto& h : history) monitor_->record(h.get<std::vector<std::vector<double>>>());
    monitor_->set_average(average.get<std::vector<std::vector<double>>>());
  }
  rebalances_ = static_cast<int>(file.int_attribute("rebalances"));
  start_step_ = step;
  if (world_.rank() == 0) {
    progress_->message(fmt::format("resumed from {} (step {}, written by {} rank(s), ep {})", path, step,
                                   file.int_attribute("world_size"), file.int_attribute("ep")));
  }
}

}  // namespace moerun
