// The byte-level MoE transformer: embedding, N pre-norm blocks (causal self-attention, then
// an MoE or dense FFN, each with a residual), final layer norm, LM head (tied to the token
// embedding by default). Explicit forward and backward, no autograd tape: each layer keeps
// what its backward needs and frees it there.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "model/attention_layer.h"
#include "model/embedding.h"
#include "model/kv_cache.h"
#include "model/norm.h"
#include "model/moe_layer.h"

namespace moerun {

class Transformer {
 public:
  // Registers every parameter in `params`; expert FFNs only for dispatcher.local_experts().
  Transformer(const ModelConfig& config, ParameterStore& params, TokenDispatcher& dispatcher);
  // One dispatcher per block (each MoE layer can have its own placement); dense blocks ignore theirs.
  Transformer(const ModelConfig& config, ParameterStore& params, const std::vector<TokenDispatcher*>& dispatchers);
  ~Transformer();

  // tokens: i32 [batch * seq_len], kept alive by the caller until backward().
  // Returns logits [batch * seq_len, vocab]; keeps the activations for backward.
  Tensor forward(const Tensor& tokens, std::int64_t batch);
  // Decoding (generation): tokens i32 [n], the next n positions of one sequence after the
  // cache's; extends the cache and returns their logits [n, vocab] (fp32). The same function
  // as forward() on the whole prefix, computed from the cached keys and values.
  Tensor decode(const Tensor& tokens, KvCache& cache);
  // dlogits: gradient of the loss with respect to the logits. aux_scale: the weight of this
  // micro-batch's MoE auxiliary losses in the total loss. Accumulates parameter gradients.
  void backward(const Tensor& dlogits, double aux_scale);
  // Called during backward after block l's gradients are complete (l = n_layers-1 .. 0), and
  // with -1 after the embedding's, when every gradient is complete. Empty = no calls.
  void set_backward_hook(std::function<void(int)> hook) { backward_hook_ = std::move(hook); }

  // train.recompute: which activations forward drops and backward recomputes (default none).
  void set_recompute(Recompute r);

  // The step's device values (runtime/readout.h): the MoE layers' counts and losses, the
  // cross-entropy (loss_slot(): {loss sum, targets}); the trainer adds its own slots before
  // the first step and reads them all once per step.
  Readout& readout() { return readout_; }
  const Readout& readout() const { return readout_; }
  std::int64_t loss_slot() const { return loss_slot_; }
  // Clears the readout and the MoE layers' host statistics: a new step (or evaluation) begins.
  void reset_stats();
  // MoE statistics since reset_stats(), one entry per MoE layer (dense blocks are skipped);
  // after the readout's read().
  std::vector<MoeStats> moe_stats() const;
  // Index of each MoE layer among all blocks.
  std::vector<int> moe_layer_ids() const;
  MoeLayer& moe_layer(int block);
  const ModelConfig& config() const { return config_; }

 private:
  struct Block;
  const ModelConfig& config_;
  Readout readout_;
  std::int64_t loss_slot_;
  Embedding embedding_;
  std::vector<std::unique_ptr<Block>> blocks_;
  std::unique_ptr<Norm> final_norm_;
  Parameter* lm_head_;  // [vocab, d]: the token table when tied
  Tensor final_in_;     // residual stream entering the final norm
  Tensor final_out_;    // [n, d] normalized, input of the LM head
  std::function<void(int)> backward_hook_;
};

}  // namespace moerun
