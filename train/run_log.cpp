#include "train/run_log.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace moerun {

RunLog::RunLog(const Config& config, int rank, const std::string& run_dir) {
  if (rank != 0) return;
  progress_ = std::make_unique<ProgressLine>(config.train.steps, config.log.every, config.log.progress);
  if (!run_dir.empty()) {
    metrics_ = std::make_unique<MetricsWriter>(run_dir);
    metrics_->write_file("config.json", config.to_json().dump(2) + "\n");
  }
}

void RunLog::message(const std::string& text) {
  if (progress_) progress_->message(text);
}

void RunLog::memory_estimate(const MemoryEstimate& e) {
  message(fmt::format("memory per rank, estimated: peak {} = parameters {}{} + gradients {} + optimizer {} + activations {} + "
                      "temporaries {} + communication {} (moerun --dry-run explains)",
                      human_bytes(double(e.peak)), human_bytes(double(e.parameters)),
                      e.compute_copies > 0 ? " + bf16 copies " + human_bytes(double(e.compute_copies)) : "",
                      human_bytes(double(e.gradients)),
                      human_bytes(double(e.optimizer)), human_bytes(double(e.activations)),
                      human_bytes(double(e.temporaries)), human_bytes(double(e.communication))));
}

void RunLog::precision(DType compute_dtype, const std::string& device_path) {
  precision_ = compute_dtype == DType::BF16 ? "bf16" : "fp32";
  compute_path_ = device_path;
  if (compute_dtype == DType::BF16)
    message(fmt::format("precision bf16 (fp32 master weights, optimizer and residual stream): {}", device_path));
}

void RunLog::event(const nlohmann::json& record) {
  if (metrics_) metrics_->write_event(record);
}

std::int64_t RunLog::resume_at(std::int64_t step) { return metrics_ ? metrics_->truncate_after(step) : 0; }

void RunLog::step(std::int64_t step, const StepResult& r) {
  if (!progress_) return;
  const double tokens_per_s = double(r.tokens) / (r.step_ms / 1000.0);
  const double imbalance = r.imbalance.empty() ? 1.0 : *std::max_element(r.imbalance.begin(), r.imbalance.end());
  progress_->update(step, fmt::format("loss {:.4f} | aux {:.4f} | {:.0f} tok/s | drop {:.1f}% | imb {:.2f}", r.loss,
                                      r.aux_loss, tokens_per_s, 100.0 * r.dropped_frac, imbalance));
  if (!metrics_) return;
  nlohmann::json line{{"step", step}, {"precision", precision_}, {"loss", r.loss}, {"aux_loss", r.aux_loss}, {"z_loss", r.z_loss},
                   {"lr", r.lr}, {"grad_norm", r.grad_norm}, {"tokens_per_s", tokens_per_s},
                   {"step_ms", r.step_ms}, {"passes_ms", r.passes_ms}, {"compute_ms", r.compute_ms}, {"a2a_ms", r.a2a_ms},
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
                   {"expert_kept", r.expert_kept},
                   {"device", {{"host_reads", r.device_transfers.host_reads},
                               {"to_host_copies", r.device_transfers.device_to_host_copies},
                               {"to_host_bytes", r.device_transfers.device_to_host_bytes},
                               {"to_device_copies", r.device_transfers.host_to_device_copies},
                               {"to_device_bytes", r.device_transfers.host_to_device_bytes}}}};
  if (r.blocks_worst_case > 0)  // blockwise static shapes: what a backend could skip
    line["blocks"] = {{"active", r.blocks_active}, {"worst_case", r.blocks_worst_case}};
  if (r.update_skipped) line["update_skipped"] = true;  // the loss-spike guard dropped the update
  metrics_->write(line);
}

void RunLog::eval(std::int64_t step, const EvalResult& r) {
  if (!progress_) return;
  std::string text = fmt::format("eval step {}: held-out loss {:.4f}", step, r.heldout_loss);
  nlohmann::json j{{"step", step}, {"eval", true}, {"heldout_loss", r.heldout_loss}};
  if (r.heldout_bpb > 0) {  // text: comparable across tokenizers
    text += fmt::format(" ({:.3f} bits/byte)", r.heldout_bpb);
    j["heldout_bpb"] = r.heldout_bpb;
  } else if (r.heldout_targets > 0) {  // token ids of unknown text: perplexity per token
    j["heldout_ppl"] = std::exp(r.heldout_loss);
    text += fmt::format(" (perplexity {:.2f})", std::exp(r.heldout_loss));
  }
  for (std::size_t i = 0; i < r.tasks.size(); ++i) {
    text += fmt::format(" | {} {:.1f}%", r.tasks[i], 100.0 * r.accuracy[i]);
    j["accuracy"][r.tasks[i]] = r.accuracy[i];
  }
  progress_->message(text);
  if (metrics_) metrics_->write(j);
}

void RunLog::summary(const Summary& s) {
  if (!progress_) return;
  progress_->finish();
  const double peak = double(s.peak_device_bytes), estimate = double(s.estimate.peak);
  progress_->message(fmt::format("done: {} steps, first loss {:.4f}, last loss {:.4f}, {:.0f} tokens/s, {} rebalance(s); "
                                 "peak device memory {} (estimated {}, {:+.1f}%), optimizer state {}, peak RSS {} (the "
                                 "largest rank's)",
                                 s.steps, s.first_loss, s.last_loss, s.tokens_per_s, s.rebalances, human_bytes(peak),
                                 human_bytes(estimate), 100.0 * (estimate - peak) / std::max(1.0, peak),
                                 human_bytes(double(s.optimizer_state_bytes)), human_bytes(double(s.peak_rss_bytes))));
  if (metrics_) {
    metrics_->write({{"summary", true}, {"status", "completed"}, {"steps", s.steps}, {"tokens_per_s", s.tokens_per_s},
                     {"precision", precision_}, {"compute_path", compute_path_},
                     {"rebalances", s.rebalances}, {"peak_device_bytes", s.peak_device_bytes},
                     {"memory_estimate", s.estimate.to_json()}, {"optimizer_state_bytes", s.optimizer_state_bytes},
                     {"peak_rss_bytes", s.peak_rss_bytes}});
  }
}

void RunLog::stopped(std::int64_t step) {
  if (metrics_) metrics_->write({{"status", "stopped"}, {"step", step}});
}

}  // namespace moerun
