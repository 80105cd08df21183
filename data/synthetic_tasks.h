// The built-in synthetic tasks: byte text "prompt=answer\n" where the answer is a function of
// the prompt, so that a model can learn them and be scored by exact match.
//   add       "123+45=168\n"      multi-digit addition (data.digits digits at most)
//   reverse   "r:hello=olleh\n"   string reversal
//   sort      "s:dbca=abcd\n"     sorting letters
//   brackets  "b:(()=no\n"        is the bracket string balanced?
// A sequence holds examples of one task (its "domain"), packed after BOS and padded with PAD;
// the loss is taken on answer tokens only. Domains are drawn with probability proportional to
// 1 / (rank + 1)^data.skew (0 = uniform), so that expert load can be skewed on purpose.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "data/data_source.h"

namespace moerun {

struct SyntheticTaskOptions {
  std::vector<std::string> tasks = {"add", "reverse", "sort", "brackets"};
  double skew = 0.0;
  int digits = 3;
  std::uint64_t seed = 1234;
  std::int64_t seq_len = 64;
};

struct TaskExample {
  std::string prompt;  // "12+7="
  std::string answer;  // "19\n"
};

class SyntheticTasks final : public DataSource {
 public:
  explicit SyntheticTasks(SyntheticTaskOptions options);
  void training_batch(std::int64_t step, std::int64_t first, std::int64_t count, TokenBatch& out) const override;
  void heldout_batch(std::int64_t first, std::int64_t count, TokenBatch& out) const override;
  std::string describe() const override;
  double bytes_per_token() const override { return 1.0; }  // byte tokens

  const std::vector<std::string>& tasks() const { return options_.tasks; }
  // Held-out examples of one task for exact-match evaluation, index i of that task's stream.
  TaskExample heldout_example(std::size_t task, std::int64_t i) const;
  // Probability of each domain (for logs and tests).
  const std::vector<double>& domain_weights() const { return weights_; }

  static const std::vector<std::string>& known_tasks();
  static TaskExample make_example(const std::string& task, int digits, std::mt19937_64& rng);

 private:
  void fill_sequence(std::uint64_t stream_seed, std::int32_t* inputs, std::int32_t* targets) const;

  SyntheticTaskOptions options_;
  std::vector<double> weights_;
};

}  // namespace moerun
