#include "data/synthetic_tasks.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "runtime/error.h"
#include "runtime/seed.h"
#include "runtime/vocab.h"

namespace moerun {

namespace {
constexpr std::uint64_t kTrainStream = 0x7472'6169'6e00'0001ULL;  // separate streams for
constexpr std::uint64_t kHeldoutStream = 0x6576'616c'0000'0002ULL;  // training and held-out data

std::string random_letters(std::mt19937_64& rng, int min_len, int max_len) {
  std::uniform_int_distribution<int> len(min_len, max_len), letter(0, 25);
  std::string s(static_cast<std::size_t>(len(rng)), 'a');
  for (char& c : s) c = static_cast<char>('a' + letter(rng));
  return s;
}

std::string bracket_string(std::mt19937_64& rng, bool balanced) {
  std::uniform_int_distribution<int> pairs(1, 4);
  const int n = pairs(rng);
  std::string s;
  int open = 0, remaining = n;
  while (remaining > 0 || open > 0) {  // a random balanced string of n pairs
    const bool can_open = remaining > 0, can_close = open > 0;
    if (can_open && (!can_close || (rng() & 1))) {
      s += '(';
      ++open;
      --remaining;
    } else {
      s += ')';
      --open;
    }
  }
  if (!balanced) {  // break it: flip one bracket (changes the count, so never balanced)
    const std::size_t i = static_cast<std::size_t>(rng() % s.size());
    s[i] = s[i] == '(' ? ')' : '(';
  }
  return s;
}

bool is_balanced(const std::string& s) {
  int depth = 0;
  for (char c : s) {
    depth += c == '(' ? 1 : -1;
    if (depth < 0) return false;
  }
  return depth == 0;
}
}  // namespace

const std::vector<std::string>& SyntheticTasks::known_tasks() {
  static const std::vector<std::string> names = {"add", "reverse", "sort", "brackets"};
  return names;
}

TaskExample SyntheticTasks::make_example(const std::string& task, int digits, std::mt19937_64& rng) {
  if (task == "add") {
    const std::int64_t limit = static_cast<std::int64_t>(std::pow(10.0, digits));
    std::uniform_int_distribution<std::int64_t> num(0, limit - 1);
    const std::int64_t a = num(rng), b = num(rng);
    return {fmt::format("{}+{}=", a, b), fmt::format("{}\n", a + b)};
  }
  if (task == "reverse") {
    std::string s = random_letters(rng, 2, 6);
    std::string r(s.rbegin(), s.rend());
    return {"r:" + s + "=", r + "\n"};
  }
  if (task == "sort") {
    std::string s = random_letters(rng, 2, 6);
    std::string sorted = s;
    std::sort(sorted.begin(), sorted.end());
    return {"s:" + s + "=", sorted + "\n"};
  }
  if (task == "brackets") {
    const std::string s = bracket_string(rng, (rng() & 1) != 0);
    return {"b:" + s + "=", std::string(is_balanced(s) ? "yes" : "no") + "\n"};
  }
  MOERUN_THROW(ConfigError, "data.tasks: unknown task '{}'; known tasks: {}", task, fmt::join(known_tasks(), ", "));
}

SyntheticTasks::SyntheticTasks(SyntheticTaskOptions options) : options_(std::move(options)) {
  MOERUN_CHECK(!options_.tasks.empty(), ConfigError, "data.tasks is empty; list at least one of: {}",
               fmt::join(known_tasks(), ", "));
  for (const auto& t : options_.tasks) {
    MOERUN_CHECK(std::find(known_tasks().begin(), known_tasks().end(), t) != known_tasks().end(), ConfigError,
                 "data.tasks: unknown task '{}'; known tasks: {}", t, fmt::join(known_tasks(), ", "));
  }
  MOERUN_CHECK(options_.digits >= 1 && options_.digits <= 9, ConfigError, "data.digits = {} must be in [1, 9]",
               options_.digits);
  MOERUN_CHECK(options_.skew >= 0.0, ConfigError, "data.skew = {} must be >= 0 (0 = uniform domains)", options_.skew);
  // The longest example must fit a sequence after BOS.
  const std::int64_t longest = 2 * options_.digits + 2 + options_.digits + 2;
  MOERUN_CHECK(options_.seq_len >= std::max<std::int64_t>(longest, 16), ConfigError,
               "model.seq_len = {} is too short for the synthetic tasks (need at least {}); raise model.seq_len",
               options_.seq_len, std::max<std::int64_t>(longest, 16));
  double total = 0.0;
  for (std::size_t i = 0; i < options_.tasks.size(); ++i) {
    weights_.push_back(1.0 / std::pow(double(i + 1), options_.skew));
    total += weights_.back();
  }
  for (double& w : weights_) w /= total;
}

std::string SyntheticTasks::describe() const {
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < options_.tasks.size(); ++i) parts.push_back(fmt::format("{} {:.0f}%", options_.tasks[i], 100 * weights_[i]));
  return fmt::format("synthetic tasks ({})", fmt::join(parts, ", "));
}

void SyntheticTasks::fill_sequence(std::uint64_t stream_seed, std::int32_t* inputs, std::int32_t* targets) const {
  std::mt19937_64 rng(stream_seed);
  std::discrete_distribution<std::size_t> domain(weights_.begin(), weights_.end());
  const std::string& task = options_.tasks[domain(rng)];
  const std::int64_t t = options_.seq_len;
  // tokens[0..t] (t + 1 of them): input = tokens[0..t-1], target = tokens[1..t].
  std::vector<std::int32_t> tokens = {vocab::kBos};
  std::vector<char> scored = {0};
  while (true) {
    const TaskExample ex = make_example(task, options_.digits, rng);
    if (static_cast<std::int64_t>(tokens.size() + ex.prompt.size() + ex.answer.size()) > t + 1) break;
    for (unsigned char c : ex.prompt) {
      tokens.push_back(c);
      scored.push_back(0);
    }
    for (unsigned char c : ex.answer) {
      tokens.push_back(c);
      scored.push_back(1);
    }
  }
  while (static_cast<std::int64_t>(tokens.size()) < t + 1) {
    tokens.push_back(vocab::kPad);
    scored.push_back(0);
  }
  for (std::int64_t i = 0; i < t; ++i) {
    inputs[i] = tokens[static_cast<std::size_t>(i)];
    targets[i] = scored[static_cast<std::size_t>(i + 1)] ? tokens[static_cast<std::size_t>(i + 1)] : vocab::kIgnore;
  }
}

void SyntheticTasks::training_batch(std::int64_t step, std::int64_t first, std::int64_t count, TokenBatch& out) const {
  out.resize(count, options_.seq_len);
  for (std::int64_t i = 0; i < count; ++i) {
    const std::uint64_t s = mix_seed(options_.seed ^ kTrainStream, static_cast<std::uint64_t>(step),
                                     static_cast<std::uint64_t>(first + i));
    fill_sequence(s, out.inputs.data() + i * options_.seq_len, out.targets.data() + i * options_.seq_len);
  }
}

void SyntheticTasks::heldout_batch(std::int64_t first, std::int64_t count, TokenBatch& out) const {
  out.resize(count, options_.seq_len);
  for (std::int64_t i = 0; i < count; ++i) {
    const std::uint64_t s = mix_seed(options_.seed ^ kHeldoutStream, 0, static_cast<std::uint64_t>(first + i));
    fill_sequence(s, out.inputs.data() + i * options_.seq_len, out.targets.data() + i * options_.seq_len);
  }
}

TaskExample SyntheticTasks::heldout_example(std::size_t task, std::int64_t i) const {
  std::mt19937_64 rng(mix_seed(options_.seed ^ kHeldoutStream, 1 + task, static_cast<std::uint64_t>(i)));
  return make_example(options_.tasks[task], options_.digits, rng);
}

}  // namespace moerun
