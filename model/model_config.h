// The shape of the MoE transformer: sizes, MoE routing options, loss coefficients.
// validate() refuses impossible values with a message naming the config key and the fix.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/dtype.h"
#include "runtime/kernel_table.h"

namespace moerun {

enum class ExpertType { Gelu, SwiGlu };

// moe.shapes: whether the device path's per-step shapes may follow the routing (dynamic) or
// are functions of the config only (static: fixed expert slots of `capacity` rows, padding
// included), as a compiled accelerator needs (docs/device.md).
enum class MoeShapes { Dynamic, Static };

// model.position: a learned position embedding added to the tokens' (GPT-2), or rotary
// embeddings of q and k in every attention layer (RoPE, with model.rope_theta; Llama, Mixtral).
enum class PositionKind { Learned, Rope };

// model.norm: LayerNorm (scale and shift) or RMSNorm (scale only; Llama, Mixtral, DeepSeek).
enum class NormKind { LayerNorm, RmsNorm };

// Activation recomputation (train.recompute): what forward drops and backward recomputes.
// None keeps everything; Moe drops the expert FFNs' hidden activations (x W1, x W3) and
// recomputes them from the expert inputs; Full keeps only each block's input and runs the
// block's forward again (router, token exchange and experts included) before its backward.
enum class Recompute { None, Moe, Full };

// parallel.dispatch_dtype: how the forward dispatch carries token-copies to the experts. Auto
// sends them in the compute dtype; Bf16 rounds them to bf16 for the trip; Fp8 sends e4m3 values
// with an fp32 scale per block of fp8_scale_block values (DeepEP's format). The experts
// compute on what arrives; combine and every backward exchange stay in the compute dtype.
enum class DispatchDtype { Auto, Bf16, Fp8 };

// model.balance: how the router is kept from collapsing onto few experts. AuxLoss is Switch's
// loss per micro-batch (c E sum_e f_e P_e); SeqAuxLoss the same per sequence, averaged over the
// micro-batch's sequences (DeepSeek-V3's sequence-wise loss); AuxFree is DeepSeek-V3's bias: a
// per-expert bias added to the scores for the top-k choice only, moved once per step by
// balance_rate * sign(mean count - count) from the world's routed counts (with aux_loss_coef > 0
// the sequence-wise loss is added, as DeepSeek-V3's complementary loss); None balances nothing.
enum class Balance { AuxLoss, SeqAuxLoss, AuxFree, None };

struct ModelConfig {
  // Token ids the model embeds and predicts: the byte vocabulary (259: 256 bytes, pad, bos,
  // eos) by default; a token file may use any vocabulary it fits in.
  std::int64_t vocab_size = 259;
  std::int64_t d_model = 128;
  std::int64_t n_layers = 3;
  std::int64_t n_heads = 4;
  std::int64_t seq_len = 64;
  std::int64_t experts = 4;
  std::int64_t top_k = 2;
  std::int64_t d_ff = 256;
  // Always-active experts of every MoE layer (DeepSeek-MoE), computed beside the routed ones and
  // added to their output; each of width shared_d_ff (0 = d_ff). s of them are one dense FFN of
  // width s x shared_d_ff (the same function: their hidden units side by side).
  std::int64_t shared_experts = 0;
  std::int64_t shared_d_ff = 0;
  std::int64_t shared_width() const { return shared_experts * (shared_d_ff > 0 ? shared_d_ff : d_ff); }
  // Expert capacity = ceil(capacity_factor * tokens * top_k / experts) per source micro-batch;
  // token-copies past it are dropped (they pass through the residual). 0 = dropless.
  double capacity_factor = 1.25;
  MoeShapes shapes = MoeShapes::Dynamic;
  // Static and dropless (capacity_factor = 0): token-copies in blocks of block_size rows, one
  // expert per block, buffers for the worst-case block count.
  std::int64_t block_size = 0;
  bool static_shapes() const { return shapes == MoeShapes::Static; }
  bool blockwise() const { return static_shapes() && capacity_factor == 0.0; }
  std::string router = "softmax_topk";  // routing policy by name (model/router.h)
  ExpertType expert_type = ExpertType::Gelu;
  NormKind norm = NormKind::LayerNorm;
  PositionKind position = PositionKind::Learned;
  double rope_theta = 10000.0;
  // Every dense_every-th block (1-based: blocks dense_every, 2*dense_every, ...) has a dense
  // FFN instead of an MoE layer; 0 = every block is MoE.
  std::int64_t dense_every = 0;
  RouterScore router_score = RouterScore::Softmax;  // softmax over experts, or a sigmoid each (DeepSeek-V3)
  Balance balance = Balance::AuxLoss;
  double balance_rate = 1e-3;  // aux_free: the bias's step per optimizer step
  double aux_loss_coef = 0.01;  // load-balancing loss weight (aux_loss, seq_aux_loss; aux_free's complement)
  double z_loss_coef = 0.001;   // router z-loss
  bool tie_embeddings = true;
  double init_std = 0.02;
  // Benchmark only (bench.router_zipf): a fixed bias on the router logits that makes expert
  // popularity follow Zipf(s). It changes the model's math; 0 = off.
  double router_zipf = 0.0;
  // Benchmark only (bench.router_balanced): token-copy i of a micro-batch goes to expert i mod
  // experts whatever the scores, so every expert gets the same number of copies (within one) on
  // every rank: the balanced step time that bounds any placement's gain. Changes the math.
  bool router_balanced = false;
  // train.precision: the dtype of activations, matmul operands and the token exchange. bf16 is
  // mixed precision (fp32 master weights, gradients, optimizer and residual stream; see
  // docs/precision.md); f32 computes everything in fp32.
  DType compute_dtype = DType::F32;
  DispatchDtype dispatch_dtype = DispatchDtype::Auto;
  std::int64_t fp8_scale_block = 128;  // values per fp8 scale; 0 = one scale per row

  std::int64_t head_dim() const { return d_model / n_heads; }
  bool is_moe_layer(std::int64_t layer) const { return dense_every <= 0 || (layer + 1) % dense_every != 0; }
  // Renormalizing one gate would make it 1 and starve the router of gradient; top-1 uses the
  // raw probability as Switch Transformer does.
  bool renormalize_gates() const { return top_k > 1; }
  // The balancing loss's weight under model.balance: none and aux_free without a coefficient have none.
  double balance_loss_coef() const { return balance == Balance::None ? 0.0 : aux_loss_coef; }
  // Whether the balancing loss is taken per sequence rather than per micro-batch.
  bool balance_per_sequence() const { return balance == Balance::SeqAuxLoss || balance == Balance::AuxFree; }
  std::int64_t capacity(std::int64_t tokens) const;

  void validate() const;
};

std::string expert_type_name(ExpertType t);
std::string recompute_name(Recompute r);  // "none", "moe", "full"

}  // namespace moerun
