#include "train/held_expert_cost.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <vector>

#include "model/feed_forward.h"
#include "runtime/parameters.h"
#include "train/optimizer.h"

namespace moerun {

double measure_held_expert_seconds(const Config& config, Device& device, std::int64_t micro_batches) {
  const ModelConfig& m = config.model;
  // Enough experts that weights, gradients, moments and compute copies exceed 64 MiB, more
  // than these CPUs' last-level cache: a rank's experts are not cache-resident in training.
  // One when a single expert's state is that large: the probe then holds, for a moment, what
  // the spare slot reserved for arriving experts holds (ExpertStore::reserve_arrivals).
  const double matrices = m.expert_type == ExpertType::SwiGlu ? 3.0 : 2.0;
  const double state_bytes = matrices * double(m.d_model * m.d_ff) * (4.0 * 4.0 + double(dtype_size(m.compute_dtype)));
  const int experts = static_cast<int>(std::clamp(std::ceil(64.0 * (1 << 20) / state_bytes), 1.0, 16.0));
  std::vector<int> ids(static_cast<std::size_t>(experts));
  std::iota(ids.begin(), ids.end(), 0);

  ParameterStore store(device, std::uint64_t(config.train.seed), m.init_std, m.compute_dtype);
  FeedForwardSet ffn(store, m, "held_expert_probe", ids, ParamKind::Expert, 0);
  ffn.set_recompute_hidden(config.train.recompute != Recompute::None);
  AdamW optimizer(config.train, store);
  const std::vector<std::int64_t> counts(static_cast<std::size_t>(experts), 1);  // one copy each
  const Tensor x = Tensor::zeros(device, {experts, m.d_model}, m.compute_dtype);
  const Tensor dy = Tensor::zeros(device, {experts, m.d_model}, m.compute_dtype);

  auto one_step = [&] {
    store.zero_grads();
    store.refresh_compute_copies();
    for (std::int64_t mb = 0; mb < std::max<std::int64_t>(1, micro_batches); ++mb) {
      const Tensor y = ffn.forward(x, counts);
      const Tensor dx = ffn.backward(dy);
    }
    optimizer.step(1, config.train.lr);
    device.synchronize();
  };
  one_step();  // first touch of every buffer, kernel set-up
  std::vector<double> seconds;
  for (int run = 0; run < 5; ++run) {
    const auto start = std::chrono::steady_clock::now();
    one_step();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::nth_element(seconds.begin(), seconds.begin() + 2, seconds.end());
  return seconds[2] / experts;
}

}  // namespace moerun
