// The contract between the kernel functions in kernels/ and a backend. Each kernel family
// has an arguments struct; a backend fills one KernelTable with a function per entry and
// its Device returns it. The public functions (kernels/*.h) validate shapes, dtypes and
// devices before dispatching, so a backend may assume well-formed arguments.
// Tensors are fp32 unless marked i32 or "f32 or bf16" (each kernel's front end in kernels/
// says which arguments may be bf16; the backend reads the dtype from each tensor, and mixed
// dtypes in one call are allowed where marked). Shapes are given as [rows, cols].
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace moerun {

// c[m, n] = op(a)[m, k] * op(b)[k, n] (+ bias[n]) (+ c if accumulate).
// op(x) = x, or x^T when the transpose flag is set (x then stored as [k, m] / [n, k]).
// a, b, c: f32 or bf16, mixed allowed. With a bf16 operand the product is a bf16 product
// (an f32 operand is rounded to bf16 first) accumulated in fp32; c may be either (bias f32).
struct MatmulArgs {
  const Tensor* a = nullptr;
  const Tensor* b = nullptr;
  const Tensor* bias = nullptr;  // optional [n]
  Tensor* c = nullptr;
  bool transpose_a = false;
  bool transpose_b = false;
  bool accumulate = false;
};

// Independent matmuls that differ only in their token count: the rows of a, and also of b
// when a is transposed (weight gradients of experts). Flags are shared; a and b are not both
// transposed. Backends use one primitive for all token counts.
struct GroupedMatmulArgs {
  std::vector<MatmulArgs> groups;
};

// Blockwise expert matmuls (moe.shapes = static, blockwise; docs/device.md): x in blocks of
// `block` rows, block i computed with the FFN labels[i] (i32 [blocks, 1] on the device: the
// backend reads it, so the host never needs it; -1 marks an unused place, which is skipped).
//   block_matmul:      out_i (+)= x_i op(weights[labels[i]])  x [blocks x block, k], out [blocks x block, n]
//                      (skipped blocks of out are zeroed unless accumulating)
//   block_weight_grad: grads[labels[i]] += x_i^T dy_i          x [blocks x block, k], dy [blocks x block, n]
// Every weight (or gradient) has one shape; dtypes as grouped_matmul (weight gradients f32).
struct BlockMatmulArgs {
  const Tensor* labels = nullptr;
  std::int64_t block = 0;
  const Tensor* x = nullptr;
  std::vector<const Tensor*> weights;  // block_matmul
  bool transpose_weights = false;      // block_matmul
  Tensor* out = nullptr;               // block_matmul
  bool accumulate = false;             // block_matmul
  const Tensor* dy = nullptr;          // block_weight_grad
  std::vector<Tensor*> grads;          // block_weight_grad
};

enum class Activation { Gelu, Silu };

// forward: y = f(x); backward: dx = dy * f'(x) (dx may alias dy).
struct ActivationArgs {
  Activation activation = Activation::Gelu;
  const Tensor* x = nullptr;
  const Tensor* dy = nullptr;  // backward only
  Tensor* out = nullptr;       // y (forward) or dx (backward)
};

// SwiGLU: y = silu(gate) * up, all [n, f]. backward: dgate, dup from dy.
struct SwiGluArgs {
  const Tensor* gate = nullptr;
  const Tensor* up = nullptr;
  const Tensor* dy = nullptr;  // backward only
  Tensor* y = nullptr;         // forward only
  Tensor* dgate = nullptr;     // backward only
  Tensor* dup = nullptr;       // backward only
};

// Row-wise softmax over the last dimension. forward: y = softmax(x).
// backward: dx = y * (dy - sum(dy * y)).
struct SoftmaxArgs {
  const Tensor* x = nullptr;  // forward input
  const Tensor* y = nullptr;  // backward: the forward output
  const Tensor* dy = nullptr;
  Tensor* out = nullptr;      // y (forward) or dx (backward)
};

// Layer norm over the last dimension of x [n, d]: y = (x - mean) / sqrt(var + eps) * gamma + beta.
// Forward saves mean [n] and variance [n] for backward. Backward writes dx and the
// parameter gradients (added to them when accumulate_param_grads).
struct LayerNormArgs {
  const Tensor* x = nullptr;
  const Tensor* gamma = nullptr;
  const Tensor* beta = nullptr;
  Tensor* mean = nullptr;
  Tensor* variance = nullptr;
  float epsilon = 1e-5f;
  Tensor* y = nullptr;            // forward
  const Tensor* dy = nullptr;     // backward
  Tensor* dx = nullptr;           // backward
  Tensor* dgamma = nullptr;       // backward
  Tensor* dbeta = nullptr;        // backward
  bool accumulate_param_grads = false;
};

// RMS norm over the last dimension: y = x * rstd * gamma, rstd = 1 / sqrt(mean(x^2) + eps).
struct RmsNormArgs {
  const Tensor* x = nullptr;
  const Tensor* gamma = nullptr;
  Tensor* rstd = nullptr;  // [n], saved by forward
  float epsilon = 1e-6f;
  Tensor* y = nullptr;
  const Tensor* dy = nullptr;
  Tensor* dx = nullptr;
  Tensor* dgamma = nullptr;
  bool accumulate_param_grads = false;
};

// Cross-entropy of logits [n, v] against labels (i32 [n]); rows whose label equals
// ignore_label contribute nothing. Forward writes probs = softmax(logits) and loss f32 [2]
// (+)= {the loss summed over counted rows, their count}: device values, which the host reads
// once per step (runtime/readout.h). Backward: dlogits = (probs - onehot) * scale on counted
// rows, 0 on ignored rows (scale is 1 / count for a mean).
struct CrossEntropyArgs {
  const Tensor* logits = nullptr;
  const Tensor* labels = nullptr;
  std::int32_t ignore_label = -1;
  Tensor* probs = nullptr;
  Tensor* loss = nullptr;          // forward
  bool accumulate = false;         // forward: add to loss instead of overwriting it
  float scale = 1.0f;              // backward
  Tensor* dlogits = nullptr;       // backward
};

// The k largest entries of each row of x [n, m], in descending order; ties go to the
// lower column index. values [n, k], indices i32 [n, k].
struct TopKArgs {
  const Tensor* x = nullptr;
  Tensor* values = nullptr;
  Tensor* indices = nullptr;
};

// gather:      dst[i, :] = src[index[i], :] (* scale[i])            dst [n, d], src [m, d]
// scatter_add: dst[index[i], :] += src[i, :] (* scale[i])           src [n, d], dst [m, d]
// index is i32 [n]; scale is optional [n]. index[i] = -1 marks a padding row (static shapes):
// gather writes zeros to dst[i, :], scatter_add skips src[i, :].
struct IndexRowsArgs {
  const Tensor* src = nullptr;
  const Tensor* index = nullptr;
  const Tensor* scale = nullptr;
  Tensor* dst = nullptr;
};

// out[i] = sum_j a[i, j] * b[i, j]   (a, b [n, d], out [n]); the gradient of row scaling.
struct RowDotArgs {
  const Tensor* a = nullptr;
  const Tensor* b = nullptr;
  Tensor* out = nullptr;
};

// Element-wise arithmetic. add/mul: out = a op b, where b has a's shape or is one row
// [m] broadcast over a's rows [n, m]. axpy: y += alpha * x. scale: x *= alpha.
enum class BinaryOp { Add, Mul };
struct BinaryArgs {
  BinaryOp op = BinaryOp::Add;
  const Tensor* a = nullptr;
  const Tensor* b = nullptr;
  Tensor* out = nullptr;  // may alias a
};
struct AxpyArgs {
  float alpha = 1.0f;
  const Tensor* x = nullptr;
  Tensor* y = nullptr;
};

// out[m] (+)= sum over rows of x [n, m].
struct SumRowsArgs {
  const Tensor* x = nullptr;
  Tensor* out = nullptr;
  bool accumulate = false;
};

// Reductions of a whole tensor x (f32) to a device scalar out f32 [1], computed in double and
// rounded once: sum_squares: out (+)= scale * sum(x^2); count_nonfinite: out (+)= scale *
// (the number of NaN or Inf values). The host reads them later, batched (runtime/readout.h).
struct ReduceArgs {
  const Tensor* x = nullptr;
  Tensor* out = nullptr;
  float scale = 1.0f;
  bool accumulate = false;
};

// Where each token-copy goes, on the device (model/moe_layer.cpp, docs/device.md): from each
// token's top-k experts (index i32 [n, k]), the capacity cut in GShard priority (every first
// choice before any second choice, earlier tokens first; capacity 0 keeps every copy), and
// each kept copy's row in the send buffer. Three layouts:
//   sorted  (slots = 0, block = 0): the kept copies sorted by expert, in priority order within
//           one: rows [n k], the first sum(kept) used (dynamic shapes);
//   slots   (slots > 0): rows [ep x slots x capacity]; expert e's copies for rank r fill slot
//           slot_of[e, r] there from its start (static capacity mode);
//   blocks  (block > 0): rows [ep x blocks x block]; each rank's share of each expert in blocks
//           of `block` rows, one expert per block, a destination's blocks in expert order;
//           labels i32 [ep x blocks, 1] = the slot there (-1: unused place) (blockwise dropless;
//           a column, so that the labels travel through the row exchange as rows).
// In the slots and blocks layouts an expert's kept copies (count c) go to rank r in proportion
// to split i32 [experts, ep]: rank r of the replicas (in rank order) takes copies [c S_{<r} / S,
// c S_{<=r} / S) with S the row's sum (integer division; Placement::split). token_of_row and
// gate_of_row (i32 [rows]) say which token and which of the n k gates each row holds, -1 for
// padding. counts f32 [2, experts] = {copies routed to each expert, copies kept}.
struct DispatchLayoutArgs {
  const Tensor* index = nullptr;
  const Tensor* split = nullptr;    // slots and blocks only
  const Tensor* slot_of = nullptr;  // slots and blocks only
  std::int64_t capacity = 0;
  std::int64_t slots = 0;
  std::int64_t block = 0;
  std::int64_t blocks = 0;          // block places per destination (blocks only)
  Tensor* token_of_row = nullptr;
  Tensor* gate_of_row = nullptr;
  Tensor* labels = nullptr;         // blocks only
  Tensor* counts = nullptr;
  Tensor* blocks_used = nullptr;    // blocks only, optional: f32 [1] += the block places filled
};

// Copies per expert, per group of n / groups consecutive tokens: out f32 [groups, experts]
// from index i32 [n, k] (the balancing loss's f, before capacity).
struct ExpertCountsArgs {
  const Tensor* index = nullptr;
  std::int64_t groups = 1;
  Tensor* out = nullptr;
};

// Decoupled-weight-decay Adam, bias-corrected with `step` (1-based):
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr * (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + weight_decay * p)
struct AdamWArgs {
  Tensor* param = nullptr;
  const Tensor* grad = nullptr;
  Tensor* m = nullptr;
  Tensor* v = nullptr;
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float epsilon = 1e-8f;
  float weight_decay = 0.0f;
  std::int64_t step = 1;
};

// Causal multi-head self-attention core over qkv [b*t, 3*d] (q, k, v side by side, each
// [b*t, h*hd] with head-major columns). Forward: probs [b, h, t, t] = softmax(q k^T / sqrt(hd)
// with future positions masked), out [b*t, d] = probs v. Backward: dqkv from dout.
struct AttentionArgs {
  std::int64_t batch = 0;
  std::int64_t seq = 0;
  std::int64_t heads = 0;
  const Tensor* qkv = nullptr;
  Tensor* probs = nullptr;       // written by forward, read by backward
  Tensor* out = nullptr;         // forward
  const Tensor* dout = nullptr;  // backward
  Tensor* dqkv = nullptr;        // backward
};

// Causal attention of new tokens against a KV cache (decoding, forward only). qkv [t, 3d]: the
// new tokens' q, k and v as the projection lays them out (q and k already rotated under RoPE).
// keys, values [capacity, d] fp32: the cache; rows [0, past) hold the earlier positions, and
// the new k and v are written to rows [past, past + t). Query i attends to rows [0, past + i]
// with the same scale (1 / sqrt(head width)) and mask as attention_forward. out [t, d], in qkv's dtype.
struct CachedAttentionArgs {
  const Tensor* qkv = nullptr;
  Tensor* keys = nullptr;
  Tensor* values = nullptr;
  std::int64_t past = 0;
  std::int64_t heads = 0;
  Tensor* out = nullptr;
};

// fp8 (e4m3) rows with fp32 scales: the packed format of parallel.dispatch_dtype = fp8.
// quantize: each row of x [n, d] (f32 or bf16) becomes a row of packed (u8 [n, d + 4 d / block]):
// d e4m3 bytes, then one fp32 scale per block of `block` values, scale = max|x| over the block
// / 448 (1 for an all-zero block), so that x ~ e4m3 * scale. dequantize: y [n, d] (f32 or bf16)
// from packed. block divides d (block = d: one scale per row).
struct Fp8RowsArgs {
  const Tensor* x = nullptr;  // quantize
  Tensor* packed = nullptr;   // written by quantize, read by dequantize
  std::int64_t block = 128;
  Tensor* y = nullptr;        // dequantize
};

// Rotary position embedding (RoPE, the half-split convention of GPT-NeoX and Llama) applied in
// place to the q and k parts of qkv [b*t, 3d] (f32 or bf16; heads of hd = d / heads columns):
// for row r (position p = r mod seq) and i < hd/2, the pair (x_i, x_{i+hd/2}) is rotated by the
// angle p * theta^(-2i/hd). inverse rotates by the opposite angle: the backward of the forward
// rotation (it is orthogonal), applied to dq and dk.
struct RopeArgs {
  Tensor* qkv = nullptr;
  std::int64_t seq = 0;  // rows per sequence: row r is at position first_position + r % seq
  std::int64_t first_position = 0;  // > 0 when decoding after a KV cache of that many positions
  std::int64_t heads = 0;
  float theta = 10000.0f;
  bool inverse = false;
};

// MoE router (top-k gating) over logits [n, e], with scores s = softmax(logits) or
// sigmoid(logits) (RouterScore).
// forward:  probs = s (softmax) or s / sum(s) (sigmoid); lse[i] = logsumexp(logits[i]) (softmax)
//           or log(sum(s)) (sigmoid); index (i32 [n, k]) = the k largest s + select_bias
//           (descending, ties to the lower expert), or forced_index when given; gates = s at
//           those experts, divided by their row sum when renormalize.
// backward: ds from dgates (through the renormalization), plus the balancing term
//           dprobs[i, e] = aux_weight[group of i, e] through probs; then
//           softmax: dlogits = probs * (dprobs + ds - <dprobs + ds, probs>) + z_scale * lse[i] * probs
//           sigmoid: dlogits = (ds + (dprobs - <dprobs, probs>) / sum(s)) * s * (1 - s)
// aux_weight carries the load-balancing loss gradient, z_scale the router z-loss's
// (for z = c * mean(lse^2): z_scale = 2c / n; softmax only).
// How the router scores experts from its logits: a softmax over the experts (Switch, Mixtral), or
// an independent sigmoid per expert (DeepSeek-V3).
enum class RouterScore { Softmax, Sigmoid };

struct RouterArgs {
  const Tensor* logits = nullptr;
  // [n, e]: the distribution over experts that the balancing loss sees: the softmax, or the
  // sigmoid scores divided by their sum over experts.
  Tensor* probs = nullptr;
  // [n]: softmax: the logits' log-sum-exp (the z-loss's); sigmoid: the log of the scores' sum.
  Tensor* lse = nullptr;
  Tensor* index = nullptr;  // i32 [n, k]: the chosen experts, best first
  Tensor* gates = nullptr;  // [n, k]: the chosen experts' scores (divided by their sum when renormalize)
  bool renormalize = true;
  RouterScore score = RouterScore::Softmax;
  // Forward, optional [e]: added to the scores for the top-k choice only, never to the gates
  // (DeepSeek-V3's aux-loss-free balancing bias).
  const Tensor* select_bias = nullptr;
  // Forward, optional i32 [n, k]: the experts each token takes instead of its top-k, with their
  // scores as gates (bench.router_balanced's forced-balanced routing; distinct per row).
  const Tensor* forced_index = nullptr;
  const Tensor* dgates = nullptr;  // backward
  // Backward: [groups, e], d loss / d probs of every token, the same for each run of
  // n / groups consecutive tokens (1 group: the micro-batch; one per sequence: per-sequence loss).
  const Tensor* aux_weight = nullptr;
  float z_scale = 0.0f;                // backward, softmax only
  Tensor* dlogits = nullptr;           // backward
};

// The kernel list, declared once: X(return type, name, parameters). The KernelTable's entries,
// each backend's declarations and its registration are generated from it, so adding a kernel
// is its arguments struct above, one line here, its front end (kernels/), the backend
// function, the reference and the test.
#define MOERUN_KERNELS(X)                                                      \
  X(void, matmul, (const MatmulArgs&))                                         \
  X(void, grouped_matmul, (const GroupedMatmulArgs&))                          \
  X(void, block_matmul, (const BlockMatmulArgs&))                              \
  X(void, block_weight_grad, (const BlockMatmulArgs&))                         \
  X(void, activation_forward, (const ActivationArgs&))                         \
  X(void, activation_backward, (const ActivationArgs&))                        \
  X(void, swiglu_forward, (const SwiGluArgs&))                                 \
  X(void, swiglu_backward, (const SwiGluArgs&))                                \
  X(void, softmax_forward, (const SoftmaxArgs&))                               \
  X(void, softmax_backward, (const SoftmaxArgs&))                              \
  X(void, layer_norm_forward, (const LayerNormArgs&))                          \
  X(void, layer_norm_backward, (const LayerNormArgs&))                         \
  X(void, rms_norm_forward, (const RmsNormArgs&))                              \
  X(void, rms_norm_backward, (const RmsNormArgs&))                             \
  X(void, cross_entropy_forward, (const CrossEntropyArgs&))                    \
  X(void, cross_entropy_backward, (const CrossEntropyArgs&))                   \
  X(void, top_k, (const TopKArgs&))                                            \
  X(void, gather_rows, (const IndexRowsArgs&))                                 \
  X(void, scatter_add_rows, (const IndexRowsArgs&))                            \
  X(void, row_dot, (const RowDotArgs&))                                        \
  X(void, binary, (const BinaryArgs&))                                         \
  X(void, axpy, (const AxpyArgs&))                                             \
  X(void, scale, (Tensor & x, float alpha))                                    \
  X(void, sum_rows, (const SumRowsArgs&))                                      \
  X(void, sum_squares, (const ReduceArgs&))                                    \
  /* dst = src in dst's dtype (f32 <-> bf16, round to nearest even) */         \
  X(void, convert, (const Tensor& src, Tensor& dst))                           \
  X(void, count_nonfinite, (const ReduceArgs&))                                \
  X(void, adamw, (const AdamWArgs&))                                           \
  X(void, rope, (const RopeArgs&))                                             \
  X(void, quantize_fp8, (const Fp8RowsArgs&))                                 \
  X(void, dequantize_fp8, (const Fp8RowsArgs&))                               \
  X(void, router_forward, (const RouterArgs&))                                 \
  X(void, router_backward, (const RouterArgs&))                                \
  X(void, dispatch_layout, (const DispatchLayoutArgs&))                        \
  X(void, expert_counts, (const ExpertCountsArgs&))                            \
  X(void, attention_forward, (const AttentionArgs&))                           \
  X(void, attention_backward, (const AttentionArgs&))                          \
  X(void, attention_cached, (const CachedAttentionArgs&))                      \
  /* primitives (or compiled kernels) created so far; flat in steady state */  \
  X(std::int64_t, primitives_created, (const Device& device))

// One function pointer per kernel; a backend fills every entry.
struct KernelTable {
#define MOERUN_KERNEL_ENTRY(ret, name, params) ret(*name) params = nullptr;
  MOERUN_KERNELS(MOERUN_KERNEL_ENTRY)
#undef MOERUN_KERNEL_ENTRY
};


}  // namespace moerun
