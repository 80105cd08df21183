#include "runtime/train/trainer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/optimizer.h"
#include "runtime/core/error.h"
#include "runtime/core/vocab.h"
#include "parallel/all_to_all_dispatcher.h"
#include "runtime/data/token_file.h"
#include "runtime/model/lm_loss.h"

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
}  // namespace

Trainer::Trainer(const Config& config, ProcessGroup& world, Device& device, const std::string& run_dir)
    : config_(config), world_(world), device_(device) {
  config.validate(world.size());
  topology_ = std::make_unique<Topology>(world, static_cast<int>(config.parallel.ep), static_cast<int>(config.model.experts));
  params_ = std::make_unique<ParameterStore>(device, static_cast<std::uint64_t>(config.train.seed), config.model.init_std);
  if (topology_->ep() == 1) {
    dispatcher_ = std::make_unique<LocalTokenDispatcher>(static_cast<int>(config.model.experts));
  } else {
    dispatcher_ = std::make_unique<AllToAllDispatcher>(
        topology_->ep_group(), Placement::contiguous(static_cast<int>(config.model.experts), topology_->ep()));
  }
  model_ = std::make_unique<Transformer>(config.model, *params_, *dispatcher_);
  // Gradients become final block by block during backward, last block first.
  params_of_block_.resize(static_cast<std::size_t>(config.model.n_layers));
  for (Parameter* p : params_->all()) {
    if (p->name.rfind("layers.", 0) == 0) {
      const int block = std::stoi(p->name.substr(7));
      params_of_block_[static_cast<std::size_t>(block)].push_back(p);
    } else {
      params_outside_blocks_.push_back(p);
    }
  }
  std::vector<Parameter*> ready_order;
  for (auto it = params_of_block_.rbegin(); it != params_of_block_.rend(); ++it)
    ready_order.insert(ready_order.end(), it->begin(), it->end());
  ready_order.insert(ready_order.end(), params_outside_blocks_.begin(), params_outside_blocks_.end());
  grad_sync_ = std::make_unique<GradSync>(ready_order, world, topology_->edp_group(),
                                          static_cast<std::size_t>(config.parallel.bucket_mb * 1024 * 1024));
  optimizer_ = std::make_unique<AdamW>(config.train, *params_);
  data_ = make_data();
  evaluator_ = std::make_unique<Evaluator>(config, *model_, device, world);
  if (world.rank() == 0) {
    progress_ = std::make_unique<ProgressLine>(config.train.steps, config.log.every, config.log.progress);
    if (!run_dir.empty()) {
      metrics_ = std::make_unique<MetricsWriter>(run_dir);
      metrics_->write_file("config.json", config.to_json().dump(2) + "\n");
    }
  }
}

Trainer::~Trainer() = default;

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

void Trainer::check_finite(std::int64_t step, double loss) const {
  const Parameter* first_bad = nullptr;
  std::int64_t bad = 0;
  for (const Parameter* p : params_->all()) {
    const std::int64_t n = kernels::count_nonfinite(p->grad);
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
  const std::size_t moe_layers = model_->moe_layer_ids().size();
  const auto experts = static_cast<std::size_t>(config_.model.experts);
  // sums: ce, aux, z, dropped, copies, then expert counts per (layer, expert)
  std::vector<double> sums(5 + moe_layers * experts, 0.0);
  for (std::size_t i = 0; i < batches.size(); ++i) {
    const TokenBatch& batch = batches[i];
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
      for (std::size_t e = 0; e < experts; ++e) sums[5 + layer * experts + e] += double(stats[layer]->assigned_per_expert[e]);
    }
  }
  model_->set_backward_hook(nullptr);
  StepResult r;
  r.allreduce_ms = 1000.0 * grad_sync_->finish();
  world_.all_reduce(std::span<double>(sums));
  r.loss = sums[0] / double(global_targets);
  r.aux_loss = sums[1] / double(config_.micro_batches_per_step());
  r.z_loss = sums[2] / double(config_.micro_batches_per_step());
  r.dropped_frac = sums[4] > 0 ? sums[3] / sums[4] : 0.0;
  r.expert_counts.assign(moe_layers, std::vector<std::int64_t>(experts));
  for (std::size_t layer = 0; layer < moe_layers; ++layer)
    for (std::size_t e = 0; e < experts; ++e) r.expert_counts[layer][e] = static_cast<std::int64_t>(sums[5 + layer * experts + e]);
  check_finite(step, r.loss + r.aux_loss + r.z_loss);
  std::vector<Tensor*> grads;
  for (Parameter* p : params_->all()) grads.push_back(&p->grad);
  r.grad_norm = global_grad_norm();
  kernels::clip_by_norm(grads, r.grad_norm, config_.train.grad_clip);
  r.lr = learning_rate(config_.train, step);
  optimizer_->step(step, r.lr);
  device_.synchronize();
  r.step_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  const DispatchStats a2a = dispatcher_->take_stats();
  r.a2a_ms = 1000.0 * a2a.seconds;
  r.a2a_bytes = a2a.bytes_sent;
  r.compute_ms = r.step_ms - r.a2a_ms - r.allreduce_ms;
  r.tokens = config_.train.global_batch * t;
  return r;
}

double Trainer::global_grad_norm() const {
  double sums[2] = {0.0, 0.0};  // dense, expert
  for (const Parameter* p : params_->all()) sums[p->kind == ParamKind::Expert ? 1 : 0] += kernels::sum_squares(p->grad);
  // Each expert is held once per expert-parallel group: sum the group's distinct experts.
  topology_->ep_group().all_reduce(std::span<double>(&sums[1], 1));
  return std::sqrt(sums[0] + sums[1]);
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
                                   "= dp {} x ep {}, {} gradient bucket(s), device {}",
                                   params_->count_elements(), config_.model.n_layers, config_.model.experts,
                                   config_.model.top_k, data_->describe(), world_.size(), topology_->dp(),
                                   topology_->ep(), grad_sync_->buckets(), device_.name()));
  }
  double timed_ms = 0.0;
  std::int64_t timed_tokens = 0;
  for (std::int64_t step = 1; step <= config_.train.steps; ++step) {
    const StepResult r = train_step(step);
    summary.losses.push_back(r.loss);
    if (step > 1) {
      timed_ms += r.step_ms;
      timed_tokens += r.tokens;
    }
    const double tokens_per_s = double(r.tokens) / (r.step_ms / 1000.0);
    if (world_.rank() == 0) {
      progress_->update(step, fmt::format("loss {:.4f} | aux {:.4f} | {:.0f} tok/s | drop {:.1f}%", r.loss, r.aux_loss,
                                          tokens_per_s, 100.0 * r.dropped_frac));
      if (metrics_) {
        metrics_->write({{"step", step}, {"loss", r.loss}, {"aux_loss", r.aux_loss}, {"z_loss", r.z_loss},
                         {"lr", r.lr}, {"grad_norm", r.grad_norm}, {"tokens_per_s", tokens_per_s},
                         {"step_ms", r.step_ms}, {"compute_ms", r.compute_ms}, {"a2a_ms", r.a2a_ms},
                         {"allreduce_ms", r.allreduce_ms}, {"a2a_bytes", r.a2a_bytes}, {"dropped_frac", r.dropped_frac},
                         {"expert_counts", r.expert_counts}});
      }
    }
    if (config_.eval.every > 0 && step % config_.eval.every == 0 && step != config_.train.steps) {
      log_eval(step, evaluator_->run(*data_, tasks));
    }
  }
  summary.final_eval = evaluator_->run(*data_, tasks);
  log_eval(config_.train.steps, summary.final_eval);
  summary.tokens_per_s = timed_ms > 0 ? double(timed_tokens) / (timed_ms / 1000.0) : 0.0;
  if (world_.rank() == 0) {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    const MemoryStats mem = device_.memory_stats();
    progress_->finish();
    progress_->message(fmt::format("done: {} steps, first loss {:.4f}, last loss {:.4f}, {:.0f} tokens/s; peak device "
                                   "memory {}, peak RSS {}",
                                   config_.train.steps, summary.losses.front(), summary.losses.back(), summary.tokens_per_s,
                                   human_bytes(double(mem.peak_bytes)), human_bytes(double(usage.ru_maxrss) * 1024.0)));
    if (metrics_) {
      metrics_->write({{"summary", true}, {"steps", config_.train.steps}, {"tokens_per_s", summary.tokens_per_s},
                       {"peak_device_bytes", mem.peak_bytes}, {"peak_rss_bytes", usage.ru_maxrss * 1024L}});
    }
  }
  return summary;
}

}  // namespace moerun
