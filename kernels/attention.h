// Causal multi-head self-attention core (scores, masked softmax, weighted values) on a
// packed qkv tensor, forward and backward, and the rotary position embedding of its q and k.
// Projections are matmuls done by the caller.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

// Rotary position embedding on the q and k parts of qkv, in place (RopeArgs).
void rope(const RopeArgs& args);

void attention_forward(const AttentionArgs& args);
void attention_backward(const AttentionArgs& args);
// Decoding: new tokens' attention against a KV cache, which it extends (CachedAttentionArgs).
void attention_cached(const CachedAttentionArgs& args);

}  // namespace moerun::kernels
