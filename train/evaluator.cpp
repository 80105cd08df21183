#include "train/evaluator.h"

#include <algorithm>
#include <cmath>

#include "kernels/index.h"
#include "runtime/trace.h"
#include "runtime/vocab.h"
#include "model/lm_loss.h"

namespace moerun {

Evaluator::Evaluator(const Config& config, Transformer& model, ParameterStore& params, Device& device, ProcessGroup& world)
    : config_(config), model_(model), params_(params), device_(device), world_(world) {}

std::vector<std::string> Evaluator::greedy_complete(const std::vector<std::string>& prompts, std::int64_t max_new_tokens) {
  const std::int64_t b = config_.train.micro_batch, t = config_.model.seq_len;
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(b * t), vocab::kPad);
  std::vector<std::int64_t> length(static_cast<std::size_t>(b), 1);
  std::vector<std::string> out(prompts.size());
  std::vector<bool> done(static_cast<std::size_t>(b), true);
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    std::int32_t* row = tokens.data() + static_cast<std::int64_t>(i) * t;
    row[0] = vocab::kBos;
    for (unsigned char c : prompts[i]) row[length[i]++] = c;
    done[i] = false;
  }
  Tensor last_rows(device_, {b}, DType::I32);
  Tensor last_logits(device_, {b, config_.model.vocab_size});
  // A fixed number of passes (no early exit), so every rank runs the same collectives.
  for (std::int64_t step = 0; step < max_new_tokens; ++step) {
    Tensor input = Tensor::from_host(device_, {b * t}, tokens);
    Tensor logits = model_.forward(input, b);
    std::vector<std::int32_t> rows(static_cast<std::size_t>(b));
    for (std::int64_t i = 0; i < b; ++i) rows[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i * t + std::min(length[static_cast<std::size_t>(i)], t) - 1);
    last_rows.copy_from_host(rows);
    kernels::gather_rows({.src = &logits, .index = &last_rows, .dst = &last_logits});
    const std::vector<float> host = last_logits.to_host();
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      if (done[i] || length[i] >= t) continue;
      const float* row = host.data() + i * static_cast<std::size_t>(config_.model.vocab_size);
      const auto next = static_cast<std::int32_t>(std::max_element(row, row + 256) - row);  // bytes only
      tokens[i * static_cast<std::size_t>(t) + static_cast<std::size_t>(length[i]++)] = next;
      out[i] += static_cast<char>(next);
      if (next == '\n') done[i] = true;
    }
  }
  return out;
}

EvalResult Evaluator::run(const DataSource& data, const SyntheticTasks* tasks) {
  const trace::Scope span("eval", "evaluation");
  params_.refresh_compute_copies();  // bf16: the weights as the last update left them
  EvalResult result;
  const std::int64_t b = config_.train.micro_batch, ranks = world_.size(), rank = world_.rank();
  // Held-out loss: batches split round-robin; every rank runs the same count.
  const std::int64_t per_rank = (config_.eval.heldout_batches + ranks - 1) / ranks;
  double loss_sum[2] = {0.0, 0.0};  // cross-entropy sum, targets
  TokenBatch batch;
  for (std::int64_t i = 0; i < per_rank; ++i) {
    const std::int64_t index = i * ranks + rank;
    data.heldout_batch(index * b, b, batch);
    Tensor inputs = Tensor::from_host(device_, {b * batch.seq_len}, batch.inputs);
    Tensor targets = Tensor::from_host(device_, {b * batch.seq_len}, batch.targets);
    const LossSums l = forward_loss(model_, inputs, targets, b);
    if (index < config_.eval.heldout_batches) {  // padding passes keep collectives aligned but do not count
      loss_sum[0] += l.ce_sum;
      loss_sum[1] += double(l.targets);
    }
  }
  world_.all_reduce(std::span<double>(loss_sum, 2));
  result.heldout_targets = static_cast<std::int64_t>(loss_sum[1]);
  result.heldout_loss = loss_sum[1] > 0 ? loss_sum[0] / loss_sum[1] : 0.0;
  if (data.bytes_per_token() > 0) result.heldout_bpb = result.heldout_loss / std::log(2.0) / data.bytes_per_token();
  if (tasks == nullptr || config_.eval.examples == 0) return result;
  // Exact match of greedy completions, per task; examples split round-robin over ranks.
  const std::int64_t max_new = std::max<std::int64_t>(config_.data.digits + 2, 8);
  for (std::size_t task = 0; task < tasks->tasks().size(); ++task) {
    std::vector<std::int64_t> mine;
    for (std::int64_t i = rank; i < config_.eval.examples; i += ranks) mine.push_back(i);
    const std::int64_t rounds = (config_.eval.examples + ranks * b - 1) / (ranks * b);
    double correct[1] = {0.0};
    for (std::int64_t r = 0; r < rounds; ++r) {
      std::vector<std::string> prompts, answers;
      for (std::int64_t j = r * b; j < std::min<std::int64_t>((r + 1) * b, static_cast<std::int64_t>(mine.size())); ++j) {
        const TaskExample ex = tasks->heldout_example(task, mine[static_cast<std::size_t>(j)]);
        prompts.push_back(ex.prompt);
        answers.push_back(ex.answer);
      }
      const auto completions = greedy_complete(prompts, max_new);
      for (std::size_t j = 0; j < answers.size(); ++j) correct[0] += completions[j] == answers[j] ? 1.0 : 0.0;
    }
    world_.all_reduce(std::span<double>(correct, 1));
    result.tasks.push_back(tasks->tasks()[task]);
    result.accuracy.push_back(correct[0] / double(config_.eval.examples));
    result.examples.push_back(config_.eval.examples);
  }
  return result;
}

}  // namespace moerun
