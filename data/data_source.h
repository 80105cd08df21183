// DataSource: where training sequences come from. Sequence i of optimizer step s is a pure
// function of (seed, s, i), so any rank can produce its own share of the same global batch
// and a run resumed at step s sees the same data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moerun {

// Host-side token ids for `sequences` sequences of `seq_len` positions each; targets are the
// next tokens, vocab::kIgnore where no loss is taken.
struct TokenBatch {
  std::int64_t sequences = 0;
  std::int64_t seq_len = 0;
  std::vector<std::int32_t> inputs;   // [sequences * seq_len]
  std::vector<std::int32_t> targets;  // [sequences * seq_len]
  void resize(std::int64_t n, std::int64_t t);
};

class DataSource {
 public:
  virtual ~DataSource() = default;
  // Sequences [first, first + count) of step `step`'s global batch.
  virtual void training_batch(std::int64_t step, std::int64_t first, std::int64_t count, TokenBatch& out) const = 0;
  // Held-out sequences [first, first + count), never used for training.
  virtual void heldout_batch(std::int64_t first, std::int64_t count, TokenBatch& out) const = 0;
  virtual std::string describe() const = 0;
  // Text bytes per token, for bits per byte (runs with different tokenizers compare); 0 when
  // unknown (a token file without its moerun-data sidecar).
  virtual double bytes_per_token() const = 0;
};

}  // namespace moerun
