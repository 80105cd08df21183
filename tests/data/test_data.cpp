// Data sources: deterministic by (seed, step, index), splittable across ranks, correct task
// answers, loss only on answers, and clear errors for bad files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "runtime/error.h"
#include "runtime/vocab.h"
#include "data/synthetic_tasks.h"
#include "data/token_file.h"
#include "expect_error.h"

namespace moerun::test {

namespace {
SyntheticTaskOptions options() {
  SyntheticTaskOptions o;
  o.seq_len = 64;
  o.seed = 99;
  return o;
}
std::string decode(const std::vector<std::int32_t>& t, std::size_t from, std::size_t to) {
  std::string s;
  for (std::size_t i = from; i < to; ++i) s += t[i] < 256 ? static_cast<char>(t[i]) : '#';
  return s;
}
}  // namespace

TEST(SyntheticTasks, SameSequencesWhateverTheSplit) {
  const SyntheticTasks tasks(options());
  TokenBatch whole, a, b, again;
  tasks.training_batch(5, 0, 8, whole);
  tasks.training_batch(5, 0, 3, a);
  tasks.training_batch(5, 3, 5, b);
  std::vector<std::int32_t> joined = a.inputs;
  joined.insert(joined.end(), b.inputs.begin(), b.inputs.end());
  EXPECT_EQ(joined, whole.inputs);
  tasks.training_batch(5, 0, 8, again);
  EXPECT_EQ(again.targets, whole.targets);
  TokenBatch other_step, heldout;
  tasks.training_batch(6, 0, 8, other_step);
  EXPECT_NE(other_step.inputs, whole.inputs);
  tasks.heldout_batch(0, 8, heldout);
  EXPECT_NE(heldout.inputs, whole.inputs);
}

TEST(SyntheticTasks, TargetsAreNextTokensOnAnswersOnly) {
  const SyntheticTasks tasks(options());
  TokenBatch batch;
  tasks.training_batch(1, 0, 16, batch);
  std::int64_t counted = 0;
  for (std::int64_t s = 0; s < batch.sequences; ++s) {
    const auto* in = batch.inputs.data() + s * batch.seq_len;
    const auto* tg = batch.targets.data() + s * batch.seq_len;
    EXPECT_EQ(in[0], vocab::kBos);
    for (std::int64_t i = 0; i + 1 < batch.seq_len; ++i) {
      if (tg[i] != vocab::kIgnore) {
        EXPECT_EQ(tg[i], in[i + 1]);
        ++counted;
      }
    }
  }
  EXPECT_GT(counted, 0);
}

TEST(SyntheticTasks, AnswersAreCorrect) {
  std::mt19937_64 rng(3);
  for (int i = 0; i < 200; ++i) {
    const TaskExample add = SyntheticTasks::make_example("add", 3, rng);
    int a = 0, b = 0;
    ASSERT_EQ(std::sscanf(add.prompt.c_str(), "%d+%d=", &a, &b), 2) << add.prompt;
    EXPECT_EQ(add.answer, std::to_string(a + b) + "\n");
    const TaskExample rev = SyntheticTasks::make_example("reverse", 3, rng);
    const std::string word = rev.prompt.substr(2, rev.prompt.size() - 3);
    EXPECT_EQ(rev.answer, std::string(word.rbegin(), word.rend()) + "\n");
    const TaskExample srt = SyntheticTasks::make_example("sort", 3, rng);
    std::string letters = srt.prompt.substr(2, srt.prompt.size() - 3);
    std::sort(letters.begin(), letters.end());
    EXPECT_EQ(srt.answer, letters + "\n");
    const TaskExample br = SyntheticTasks::make_example("brackets", 3, rng);
    int depth = 0;
    bool ok = true;
    for (char c : br.prompt.substr(2, br.prompt.size() - 3)) {
      depth += c == '(' ? 1 : -1;
      ok = ok && depth >= 0;
    }
    EXPECT_EQ(br.answer, (ok && depth == 0) ? "yes\n" : "no\n") << br.prompt;
  }
}

TEST(SyntheticTasks, SkewOrdersDomainWeights) {
  SyntheticTaskOptions o = options();
  EXPECT_NEAR(SyntheticTasks(o).domain_weights()[3], 0.25, 1e-12);
  o.skew = 1.5;
  const auto w = SyntheticTasks(o).domain_weights();
  for (std::size_t i = 1; i < w.size(); ++i) EXPECT_LT(w[i], w[i - 1]);
  EXPECT_NEAR(w[0] / w[1], std::pow(2.0, 1.5), 1e-9);
}

TEST(SyntheticTasks, RejectsUnknownTasksAndShortSequences) {
  SyntheticTaskOptions o = options();
  o.tasks = {"add", "multiply"};
  EXPECT_THROW(SyntheticTasks{o}, ConfigError);
  o = options();
  o.seq_len = 8;
  EXPECT_THROW(SyntheticTasks{o}, ConfigError);
}

namespace {
std::string temp_file(const std::string& name, const std::string& bytes) {
  const auto path = std::filesystem::temp_directory_path() / name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path.string();
}
}  // namespace

TEST(TokenFile, ReadsTextAsBytesDeterministically) {
  std::string text;
  for (int i = 0; i < 500; ++i) text += "the quick brown fox " + std::to_string(i) + "\n";
  const std::string path = temp_file("moerun_text.txt", text);
  const TokenFile file(path, parse_token_file_format("auto", path), 32, 7, vocab::kSize);
  EXPECT_EQ(file.tokens(), static_cast<std::int64_t>(text.size()));
  TokenBatch a, b;
  file.training_batch(3, 0, 4, a);
  file.training_batch(3, 0, 4, b);
  EXPECT_EQ(a.inputs, b.inputs);
  // Targets are the next bytes of the same window.
  const std::string window = decode(a.inputs, 0, 32);
  EXPECT_NE(text.find(window), std::string::npos);
  EXPECT_EQ(a.targets[0], a.inputs[1]);
}

TEST(TokenFile, ReadsUint16Tokens) {
  std::string bytes;
  for (std::uint16_t i = 0; i < 400; ++i) {
    const std::uint16_t v = i % 250;
    bytes.append(reinterpret_cast<const char*>(&v), 2);
  }
  const std::string path = temp_file("moerun_tokens.u16", bytes);
  const TokenFile file(path, parse_token_file_format("auto", path), 16, 1, vocab::kSize);
  EXPECT_EQ(file.tokens(), 400);
  TokenBatch b;
  file.heldout_batch(0, 2, b);
  EXPECT_EQ((b.inputs[1] - b.inputs[0] + 250) % 250, 1);
}

TEST(TokenFile, BadFilesAreClearErrors) {
  expect_error<DataError>([] { TokenFile("/nonexistent/data.txt", TokenFileFormat::Text, 16, 1, vocab::kSize); }, "/nonexistent/data.txt");
  const std::string empty = temp_file("moerun_empty.txt", "");
  expect_error<DataError>([&] { TokenFile(empty, TokenFileFormat::Text, 16, 1, vocab::kSize); }, "empty");
  const std::string tiny = temp_file("moerun_tiny.txt", "hello world");
  expect_error<DataError>([&] { TokenFile(tiny, TokenFileFormat::Text, 16, 1, vocab::kSize); }, "too few");
  std::string odd(301, 'x');
  const std::string odd_path = temp_file("moerun_odd.u16", odd);
  expect_error<DataError>([&] { TokenFile(odd_path, TokenFileFormat::U16, 16, 1, vocab::kSize); }, "multiple of 2");
  std::string big;
  for (int i = 0; i < 200; ++i) {
    const std::uint16_t v = i == 150 ? 60000 : 5;
    big.append(reinterpret_cast<const char*>(&v), 2);
  }
  const std::string big_path = temp_file("moerun_big.u16", big);
  expect_error<DataError>([&] { TokenFile(big_path, TokenFileFormat::U16, 16, 1, vocab::kSize); }, "position 150");
}

}  // namespace moerun::test
