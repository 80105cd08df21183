#include "model/model_config.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "model/router.h"
#include "runtime/error.h"

namespace moerun {

std::string expert_type_name(ExpertType t) { return t == ExpertType::Gelu ? "gelu" : "swiglu"; }

std::string recompute_name(Recompute r) { return r == Recompute::None ? "none" : r == Recompute::Moe ? "moe" : "full"; }

std::int64_t ModelConfig::capacity(std::int64_t tokens) const {
  if (capacity_factor <= 0.0) return 0;
  return static_cast<std::int64_t>(
      std::ceil(capacity_factor * static_cast<double>(tokens * top_k) / static_cast<double>(experts)));
}

void ModelConfig::validate() const {
  const std::vector<std::string> routers = router_names();
  MOERUN_CHECK(std::find(routers.begin(), routers.end(), router) != routers.end(), ConfigError,
               "model.router = '{}' is not one of this build's choices: {}", router, fmt::join(routers, ", "));
  auto positive = [](std::int64_t v, const char* key, const char* why) {
    MOERUN_CHECK(v >= 1, ConfigError, "model.{} = {} must be >= 1 ({})", key, v, why);
  };
  positive(vocab_size, "vocab_size", "token ids the model embeds and predicts");
  positive(d_model, "d_model", "the width of every layer");
  positive(n_layers, "n_layers", "at least one transformer block");
  positive(n_heads, "n_heads", "attention needs a head");
  positive(seq_len, "seq_len", "tokens per sequence");
  positive(experts, "experts", "an MoE layer needs experts");
  positive(top_k, "top_k", "each token goes to at least one expert");
  positive(d_ff, "d_ff", "the expert FFN's hidden width");
  MOERUN_CHECK(d_model % n_heads == 0, ConfigError,
               "model.d_model = {} is not divisible by model.n_heads = {}: every head gets d_model / n_heads "
               "channels; choose n_heads among the divisors of d_model",
               d_model, n_heads);
  MOERUN_CHECK(top_k <= experts, ConfigError,
               "model.top_k = {} exceeds model.experts = {}: a token cannot pick more distinct experts than exist; "
               "use top_k in [1, {}]",
               top_k, experts, experts);
  MOERUN_CHECK(capacity_factor >= 0.0 && std::isfinite(capacity_factor), ConfigError,
               "model.capacity_factor = {} must be >= 0 (0 = dropless; 1.0-2.0 is usual)", capacity_factor);
  MOERUN_CHECK(block_size >= 0, ConfigError, "moe.block_size = {} must be positive (or 0 = not blockwise)", block_size);
  MOERUN_CHECK(!blockwise() || block_size > 0, ConfigError,
               "moe.shapes = static with model.capacity_factor = 0 (dropless) needs moe.block_size > 0: token-copies "
               "travel in blocks of that many rows (128 or 256 is usual; smaller wastes less padding, larger makes "
               "bigger matmuls), or set model.capacity_factor > 0 for the capacity mode");
  MOERUN_CHECK(block_size == 0 || blockwise(), ConfigError,
               "moe.block_size = {} applies only to moe.shapes = static with model.capacity_factor = 0 (blockwise "
               "dropless); set moe.block_size = 0, or those two keys",
               block_size);
  MOERUN_CHECK(dense_every >= 0, ConfigError, "model.dense_every = {} must be >= 0 (0 = every block MoE)", dense_every);
  MOERUN_CHECK(aux_loss_coef >= 0.0 && z_loss_coef >= 0.0, ConfigError,
               "model.aux_loss_coef = {} and model.z_loss_coef = {} must be >= 0", aux_loss_coef, z_loss_coef);
  MOERUN_CHECK(router_score == RouterScore::Softmax || z_loss_coef == 0.0, ConfigError,
               "model.router_score = sigmoid has no softmax over experts for the router z-loss, but model.z_loss_coef = {}; "
               "set model.z_loss_coef = 0 (DeepSeek-V3 uses none)",
               z_loss_coef);
  MOERUN_CHECK(balance_rate >= 0.0 && std::isfinite(balance_rate), ConfigError,
               "model.balance_rate = {} must be >= 0 (DeepSeek-V3 uses 1e-3)", balance_rate);
  MOERUN_CHECK(init_std > 0.0, ConfigError, "model.init_std = {} must be > 0", init_std);
  MOERUN_CHECK(position != PositionKind::Rope || (d_model / n_heads) % 2 == 0, ConfigError,
               "model.position = rope rotates pairs of a head's columns, but model.d_model / model.n_heads = {} / {} = {} "
               "is odd; choose an even head width",
               d_model, n_heads, d_model / n_heads);
  MOERUN_CHECK(shared_experts >= 0 && shared_d_ff >= 0, ConfigError,
               "model.shared_experts = {} and model.shared_d_ff = {} must be >= 0 (0 shared experts: none; shared_d_ff 0: "
               "model.d_ff)",
               shared_experts, shared_d_ff);
  MOERUN_CHECK(rope_theta > 0.0, ConfigError, "model.rope_theta = {} must be > 0 (10000 is usual)", rope_theta);
  MOERUN_CHECK(fp8_scale_block >= 0, ConfigError, "parallel.fp8_scale_block = {} must be >= 0 (0 = one scale per row)",
               fp8_scale_block);
  MOERUN_CHECK(dispatch_dtype != DispatchDtype::Fp8 || fp8_scale_block == 0 || d_model % fp8_scale_block == 0, ConfigError,
               "parallel.dispatch_dtype = fp8 scales blocks of parallel.fp8_scale_block = {} values, but model.d_model = {} "
               "is not a multiple of {}; set parallel.fp8_scale_block to a divisor of {} (or 0: one scale per row)",
               fp8_scale_block, d_model, fp8_scale_block, d_model);
}

}  // namespace moerun
