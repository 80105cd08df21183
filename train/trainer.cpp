#include "train/trainer.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "checkpoint/checkpoint_reader.h"
#include "data/synthetic_tasks.h"
#include "kernels/elementwise.h"
#include "kernels/optimizer.h"
#include "model/lm_loss.h"
#include "parallel/migrator.h"
#include "parallel/mpi_group.h"
#include "parallel/watchdog.h"
#include "runtime/error.h"
#include "runtime/trace.h"
#include "runtime/vocab.h"
#include "train/checkpoint_state.h"
#include "train/planner_input.h"
#include "train/signals.h"
#include "train/wiring.h"

namespace moerun {

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point start) { return std::chrono::duration<double, std::milli>(Clock::now() - start).count(); }
}  // namespace

Trainer::Trainer(const Config& config, ProcessGroup& world, Device& device, const std::string& run_dir)
    : config_(config), world_(world), device_(device), run_dir_(run_dir),
      loss_guard_(config.train.max_loss_ratio, config.train.loss_spike) {
  config_.validate(world.size());
  // Before anything is allocated: a layout over runtime.memory_limit stops here.
  memory_estimate_ = checked_memory_estimate(config_, world.size(), !device.host_accessible(),
                                             world.split_node_local("node")->size());
  topology_ = std::make_unique<Topology>(world, static_cast<int>(config_.parallel.ep), static_cast<int>(config_.model.experts),
                                         static_cast<int>(config_.parallel.ranks_per_node));
  params_ = std::make_unique<ParameterStore>(device, std::uint64_t(config_.train.seed), config_.model.init_std, config_.model.compute_dtype);
  dispatchers_ = make_dispatchers(config_, *topology_);
  std::vector<TokenDispatcher*> per_block;
  for (auto& d : dispatchers_) per_block.push_back(d.get());
  model_ = std::make_unique<Transformer>(config_.model, *params_, per_block);
  model_->set_recompute(config_.train.recompute);
  grad_slots_ = model_->readout().reserve(2);  // {squared gradient norm, non-finite gradient values}
  if (config_.model.static_shapes()) device.expect_static_shapes(1);  // the first step compiles every shape
  moe_blocks_ = model_->moe_layer_ids();
  // Before the optimizer: under ZeRO-1 the buckets decide whose rows are whose.
  grad_groups_ = std::make_unique<GradientGroups>(*topology_, config_);
  grad_groups_->rebuild(*params_, moe_blocks_, placements());
  optimizer_ = std::make_unique<AdamW>(config_.train, *params_,
                                       [this](const Parameter& p) { return grad_groups_->sync().owned_rows(p); });
  expert_store_ = std::make_unique<ExpertStore>(config_.model, config_.train.shard_optimizer, *params_, *optimizer_,
                                                topology_->edp_group());
  if (config_.balance.policy != BalancePolicy::None && topology_->ep() > 1 && !moe_blocks_.empty()) {
    // The spare expert slots' memory, held from the start (ExpertStore::reserve_arrivals).
    const std::vector<Placement> now = placements();
    const int held = now.front().slots_used(topology_->ep_rank());
    expert_store_->reserve_arrivals(moe_blocks_, now, topology_->ep_rank(),
                                    static_cast<int>(config_.expert_slots_per_rank()) - held);
  }
  data_ = make_data(config_);
  evaluator_ = std::make_unique<Evaluator>(config_, *model_, *params_, device, world);
  log_ = std::make_unique<RunLog>(config_, world.rank(), run_dir);
  monitor_ = std::make_unique<LoadMonitor>(static_cast<int>(moe_blocks_.size()), static_cast<int>(config_.model.experts),
                                           static_cast<int>(config_.balance.window), load_history_steps(config_));
  rebalancer_ = std::make_unique<Rebalancer>(config_, *topology_, *monitor_, *log_, device);
  if (config_.log.routing_trace && !run_dir_.empty())
    routing_trace_ = std::make_unique<RoutingTraceLog>(world_, config_, run_dir_, moe_blocks_.size());
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

std::vector<Placement> Trainer::placements() const {
  std::vector<Placement> out;
  if (topology_->ep() == 1) return out;
  for (int block : moe_blocks_) out.push_back(dispatchers_[static_cast<std::size_t>(block)]->placement());
  return out;
}

std::vector<std::vector<int>> Trainer::local_experts() const {
  std::vector<std::vector<int>> out;
  for (int block : moe_blocks_) out.push_back(dispatchers_[static_cast<std::size_t>(block)]->local_experts());
  return out;
}

TrainingState Trainer::state() {
  return {config_, *params_, *optimizer_, grad_groups_->sync(), *topology_, moe_blocks_, placements(), local_experts(), *monitor_};
}

double Trainer::apply_placements(const std::vector<Placement>& placements) {
  const trace::Scope span("rebalance", "migrate experts");
  const auto start = Clock::now();
  const std::vector<Placement> current = this->placements();
  MOERUN_CHECK(placements.size() == current.size(), RuntimeError,
               "[rebalance] {} placements for {} MoE layers (expert parallelism needs parallel.ep > 1)",
               placements.size(), current.size());
  {
    const trace::Scope transfer("rebalance", "transfer expert state");
    migrate_experts(topology_->ep_group(), moe_blocks_, current, placements, *expert_store_);
  }
  for (std::size_t i = 0; i < moe_blocks_.size(); ++i) {
    dispatchers_[static_cast<std::size_t>(moe_blocks_[i])]->set_placement(placements[i]);
    model_->moe_layer(moe_blocks_[i]).attach_local_experts(*params_);
  }
  {
    const trace::Scope regroup("rebalance", "rebuild gradient groups");
    grad_groups_->rebuild(*params_, moe_blocks_, placements);
  }
  for (const Parameter* p : params_->all()) {  // the moments must cover exactly the rows the buckets assign
    const RowRange held = optimizer_->moments(p->name).rows, owned = grad_groups_->sync().owned_rows(*p);
    MOERUN_CHECK(held == owned, RuntimeError, "[zero-1] the optimizer holds rows [{}, {}) of '{}' but its bucket assigns "
                 "[{}, {}) to this rank", held.begin, held.end, p->name, owned.begin, owned.end);
  }
  return ms_since(start) / 1000.0;
}

bool Trainer::maybe_rebalance(std::int64_t step, const StepResult& last) {
  return rebalancer_->after_step(step, last, placements(),
                                 [this](const std::vector<Placement>& p) { return apply_placements(p); });
}

std::int64_t Trainer::first_nonfinite_grad(const Parameter** first) const {
  for (const Parameter* p : params_->all()) {
    // Only the owned rows hold complete sums (all rows unless ZeRO-1 shards the parameter).
    const RowRange rows = grad_groups_->sync().owned_rows(*p);
    if (rows.empty()) continue;
    const std::int64_t n = kernels::read_count_nonfinite(p->grad.rows(rows.begin, rows.end));
    if (n > 0) {
      *first = p;
      return n;
    }
  }
  return 0;
}

void Trainer::check_finite(std::int64_t step, double loss, const GlobalStepNumbers& g) const {
  if (std::isfinite(loss) && g.ranks_with_nonfinite_grads == 0) return;
  const Parameter* first_bad = nullptr;
  const std::int64_t bad = first_nonfinite_grad(&first_bad);  // an error path: reads each gradient's count
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

void Trainer::add_gradient_health(const std::vector<Placement>& current) {
  // A replicated expert's (identical) gradient lives on several ranks: count it once.
  auto copies_of = [&](const Parameter& p) {
    if (p.kind == ParamKind::Dense || current.empty()) return 1.0;
    const auto it = std::find(moe_blocks_.begin(), moe_blocks_.end(), p.layer);
    return double(current[static_cast<std::size_t>(it - moe_blocks_.begin())].replicas(p.expert).size());
  };
  Tensor squares = model_->readout().slots(grad_slots_, 1), nonfinite = model_->readout().slots(grad_slots_ + 1, 1);
  auto add = [&](const Tensor& grad, double copies) {
    kernels::sum_squares({.x = &grad, .out = &squares, .scale = static_cast<float>(1.0 / copies), .accumulate = true});
  };
  const GradSync& sync = grad_groups_->sync();
  for (const Parameter* p : params_->all()) {
    // Only the owned rows hold complete sums (all rows unless ZeRO-1 shards the parameter).
    const RowRange rows = sync.owned_rows(*p);
    if (rows.empty()) continue;
    const Tensor owned = p->grad.rows(rows.begin, rows.end);
    kernels::count_nonfinite({.x = &owned, .out = &nonfinite, .accumulate = true});
    if (config_.train.shard_optimizer) {
      // ZeRO-1: each rank holds the complete sum of its own rows only. Every row has one owner
      // per copy (an expert's replicas own the same rows), so the world's sum of owned squares,
      // each divided by its copies, counts every element once.
      add(owned, copies_of(*p));
      continue;
    }
    // Dense gradients are whole and identical on every rank: rank 0 counts them. Each EP group
    // holds every expert: the first one counts them.
    if (p->kind == ParamKind::Dense ? world_.rank() == 0 : topology_->dp_rank() == 0) add(p->grad, copies_of(*p));
  }
}

StepResult Trainer::train_step(std::int64_t step) {
  const trace::Scope span("step", "step", static_cast<int>(step));
  watchdog::set_step(step);
  const auto start = Clock::now();
  device_.begin_step();  // the step's own host round trips are counted from here
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
  params_->refresh_compute_copies();  // bf16: the weights as the last update, load or migration left them
  model_->reset_stats();  // the step's device values (losses, counts, gradient norms) start at zero
  const std::size_t moe_layers = moe_blocks_.size(), experts = static_cast<std::size_t>(config_.model.experts);
  for (std::size_t i = 0; i < batches.size(); ++i) {
    const trace::Scope micro_span("step", "micro-batch", static_cast<int>(i));
    Tensor inputs = Tensor::from_host(device_, {m * t}, batches[i].inputs);
    Tensor targets = Tensor::from_host(device_, {m * t}, batches[i].targets);
    // The last backward of the step: start reducing as blocks finish.
    if (i + 1 == batches.size()) model_->set_backward_hook(grad_groups_->backward_hook());
    forward_backward(*model_, inputs, targets, m, scales);
  }
  model_->set_backward_hook(nullptr);
  StepResult r;
  r.allreduce_ms = 1000.0 * grad_groups_->sync().finish();
  r.passes_ms = ms_since(start);
  const std::vector<Placement> current = placements();
  add_gradient_health(current);
  model_->readout().read();  // the step's one device->host read of what the host needs
  LocalStepNumbers local = local_step_numbers(read_losses(*model_), model_->moe_stats(), r);
  local.grad_squares = model_->readout().value(grad_slots_);
  local.nonfinite_grads = static_cast<std::int64_t>(model_->readout().value(grad_slots_ + 1));
  local.signal = checkpoint_signal_received();
  for (auto& d : dispatchers_) local.a2a += d->take_stats();
  const GlobalStepNumbers global = reduce_step_numbers(world_, local);
  const StepShape shape{.targets = double(global_targets), .micro_batches = double(config_.micro_batches_per_step()),
                        .dp = topology_->dp(), .ep = topology_->ep(), .ep_group_first_rank = world_.rank() - topology_->ep_rank(),
                        .moe_layers = moe_layers, .experts = experts};
  fill_global_numbers(global, shape, !current.empty(), r);
  if (routing_trace_) routing_trace_->record(step, local.routed, r.expert_kept);
  // The load that costs time is what the experts process: copies kept after the capacity cut.
  std::vector<std::vector<double>> group_counts(moe_layers, std::vector<double>(experts));
  for (std::size_t layer = 0; layer < moe_layers; ++layer)
    for (std::size_t e = 0; e < experts; ++e) group_counts[layer][e] = double(r.expert_kept[layer][e]) / double(shape.dp);
  monitor_->record(group_counts);
  if (!current.empty()) {
    r.imbalance = monitor_->imbalance(current, /*latest=*/true);
    r.rank_copies.assign(static_cast<std::size_t>(topology_->ep()), 0.0);
    for (std::size_t layer = 0; layer < moe_layers; ++layer) {
      const auto per_rank = expected_rank_loads(group_counts[layer], current[layer]);
      for (std::size_t q = 0; q < per_rank.size(); ++q) r.rank_copies[q] += per_rank[q];
    }
  }
  const trace::Scope optimizer_span("optimizer", "clip and update");
  check_finite(step, r.loss + r.aux_loss + r.z_loss, global);
  const auto spike = loss_guard_.check(step, r.loss);
  MOERUN_CHECK(!spike || loss_guard_.action() == LossSpikeAction::Skip, RuntimeError, "[loss guard] {}; training stopped "
               "before the update, nothing of this state is saved. Lower train.lr, raise train.warmup_steps or "
               "train.max_loss_ratio, set train.loss_spike = \"skip\", or check the data", spike.value_or(""));
  if (spike) log_->message(fmt::format("loss guard: {}; this step's update is skipped", *spike));
  std::vector<Tensor*> grads;
  for (Parameter* p : params_->all()) grads.push_back(&p->grad);
  r.grad_norm = std::sqrt(global.grad_squares);
  r.lr = learning_rate(config_.train, step);
  r.update_skipped = spike.has_value();
  if (!r.update_skipped) {
    kernels::clip_by_norm(grads, r.grad_norm, config_.train.grad_clip);
    optimizer_->step(step, r.lr);
    for (std::size_t i = 0; i < moe_layers; ++i) model_->moe_layer(moe_blocks_[i]).after_step(r.expert_counts[i]);
  }
  if (config_.train.shard_optimizer && !r.update_skipped) {  // ZeRO-1: every rank gets the rows the others updated
    const auto gather_start = Clock::now();
    grad_groups_->sync().gather_parameters();
    r.allreduce_ms += ms_since(gather_start);
  }
  device_.synchronize();
  r.device_transfers = device_.take_transfer_stats();
  device_.end_step();  // a compiling backend's step marker (after warm-up, shapes are frozen)
  r.step_ms = ms_since(start);
  r.a2a_ms = 1000.0 * local.a2a.seconds;
  r.a2a_bytes = local.a2a.bytes_sent;
  r.a2a_bytes_inter_node = local.a2a.bytes_inter_node;
  r.a2a_messages_intra_node = local.a2a.messages_intra_node;
  r.a2a_messages_inter_node = local.a2a.messages_inter_node;
  r.allreduce_bytes_intra_node = grad_groups_->bytes_intra_node();
  r.allreduce_bytes_inter_node = grad_groups_->bytes_inter_node();
  r.compute_ms = r.step_ms - r.a2a_ms - r.allreduce_ms;
  r.tokens = config_.train.global_batch * t;
  last_step_ = r;
  return r;
}

void Trainer::log_start() {
  const std::string exchange = dispatchers_.front()->exchange_name();
  log_->message(fmt::format("moerun: {} parameters on rank 0 ({} layers, {} experts, top-{}), data: {}, {} rank(s) = dp {} x "
                            "ep {}, {} gradient bucket(s){}, recompute {}, {} token exchange, device {}",
                            params_->count_elements(), config_.model.n_layers, config_.model.experts, config_.model.top_k,
                            data_->describe(), world_.size(), topology_->dp(), topology_->ep(), grad_groups_->sync().buckets(),
                            config_.train.shard_optimizer ? " (ZeRO-1: optimizer state sharded)" : "",
                            recompute_name(config_.train.recompute), exchange == "none" ? "no" : exchange, device_.name()));
  log_->memory_estimate(memory_estimate_);
  log_->precision(config_.model.compute_dtype, device_.dtype_path(config_.model.compute_dtype));
  for (const std::string& note : config_.notes()) log_->message("note: " + note);
}

TrainSummary Trainer::run() {
  TrainSummary summary;
  const auto* tasks = dynamic_cast<const SyntheticTasks*>(data_.get());
  log_start();
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
    log_->step(step, r);
    if (step_callback_) step_callback_();
    maybe_rebalance(step, r);
    if (!run_dir_.empty() && config_.checkpoint.every > 0 && step % config_.checkpoint.every == 0) {
      save_checkpoint(step);
      last_saved = step;
    }
    if (r.stop_requested) {  // a signal on any rank stops every rank after this step, with a checkpoint
      if (!run_dir_.empty() && last_saved != step) save_checkpoint(step);
      log_->message(fmt::format("signal received: checkpoint written after step {}, stopping", step));
      summary.stopped_by_signal = true;
      log_->stopped(step);
      return summary;
    }
    if (config_.eval.every > 0 && step % config_.eval.every == 0 && step != config_.train.steps)
      log_->eval(step, evaluator_->run(*data_, tasks));
  }
  if (!run_dir_.empty() && config_.checkpoint.at_end && last_saved != config_.train.steps && start_step_ < config_.train.steps)
    save_checkpoint(config_.train.steps);
  summary.final_eval = evaluator_->run(*data_, tasks);
  log_->eval(std::max(config_.train.steps, start_step_), summary.final_eval);  // resumed past the end: the checkpoint's step
  if (trace::enabled()) {
    write_trace();
    log_->message(fmt::format("trace: {0}/trace/rank_<r>.json; one file for Perfetto: launch/merge_traces.py {0}", run_dir_));
  }
  summary.tokens_per_s = timed_ms > 0 ? double(timed_tokens) / (timed_ms / 1000.0) : 0.0;
  summary.rebalances = rebalancer_->rebalances();
  // The busiest rank's memory: what a layout must fit.
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  RunLog::Summary s{.steps = config_.train.steps,
                    .first_loss = summary.losses.empty() ? 0.0 : summary.losses.front(),
                    .last_loss = summary.losses.empty() ? 0.0 : summary.losses.back(),
                    .tokens_per_s = summary.tokens_per_s,
                    .rebalances = summary.rebalances,
                    .estimate = memory_estimate_};
  s.peak_device_bytes = world_.all_reduce_value(static_cast<std::int64_t>(device_.memory_stats().peak_bytes), ReduceOp::Max);
  s.peak_rss_bytes = world_.all_reduce_value(std::int64_t{usage.ru_maxrss} * 1024, ReduceOp::Max);
  s.optimizer_state_bytes = world_.all_reduce_value(
      optimizer_->state_elements() * static_cast<std::int64_t>(sizeof(float)), ReduceOp::Max);
  log_->summary(s);
  return summary;
}

std::string Trainer::save_checkpoint(std::int64_t step) {
  const trace::Scope span("checkpoint", "checkpoint", static_cast<int>(step));
  const auto start = Clock::now();
  const ckpt::CheckpointContent content =
      checkpoint_content(state(), step, rebalancer_->rebalances(), last_step_ ? &*last_step_ : nullptr);
  const auto* mpi = dynamic_cast<const MpiGroup*>(&world_);
  const std::string path = ckpt::write_checkpoint(world_, mpi ? mpi->comm() : MPI_COMM_NULL, run_dir_ + "/checkpoints", step,
                                                  content, static_cast<int>(config_.checkpoint.keep));
  log_->event({{"event", "checkpoint"}, {"step", step}, {"path", path}, {"seconds", ms_since(start) / 1000.0}});
  return path;
}

void Trainer::restore(const std::string& dir_or_file, const std::vector<std::string>& config_changes) {
  const std::string path = ckpt::resolve_checkpoint(dir_or_file);
  const ckpt::CheckpointReader file(path);
  // The placement travels with the checkpoint when the expert-parallel shape is the same.
  const std::size_t layers = topology_->ep() > 1 ? moe_blocks_.size() : 0;
  if (const auto saved = saved_placements(file, topology_->ep(), layers)) apply_placements(*saved);
  restore_state(file, state());
  rebalancer_->set_rebalances(static_cast<int>(file.int_attribute("rebalances")));
  start_step_ = file.int_attribute("step");
  log_->message(fmt::format("resumed from {} (step {}, written by {} rank(s), ep {}){}", path, start_step_,
                            file.int_attribute("world_size"), file.int_attribute("ep"),
                            config_changes.empty() ? "" : ", changed: " + fmt::format("{}", fmt::join(config_changes, "; "))));
  const std::int64_t superseded = log_->resume_at(start_step_);
  log_->event({{"event", "resume"}, {"step", start_step_}, {"path", path}, {"config_changes", config_changes},
               {"superseded_metrics_lines", superseded}});
}

}  // namespace moerun
