// DataSource: where training sequences come from. Sequence i of optimizer step s is a pure
// function of (seed, s, i), so any rank can produce its own share of the same global batch
// and a run resumed at step s sees the same data.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
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

// Training from one source, held-out data from another (data.valid_source).
class SplitData final : public DataSource {
 public:
  SplitData(std::unique_ptr<DataSource> train, std::unique_ptr<DataSource> heldout)
      : train_(std::move(train)), heldout_(std::move(heldout)) {}
  void training_batch(std::int64_t step, std::int64_t first, std::int64_t count, TokenBatch& out) const override {
    train_->training_batch(step, first, count, out);
  }
  void heldout_batch(std::int64_t first, std::int64_t count, TokenBatch& out) const override {
    heldout_->heldout_batch(first, count, out);
  }
  std::string describe() const override { return train_->describe() + ", held out: " + heldout_->describe(); }
  double bytes_per_token() const override { return heldout_->bytes_per_token(); }

 private:
  std::unique_ptr<DataSource> train_, heldout_;
};

}  // namespace moerun
