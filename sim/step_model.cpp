#include "sim/step_model.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "parallel/collective_cost.h"
#include "runtime/error.h"
#include "train/memory_plan.h"
#include "train/wiring.h"

namespace moerun::sim {
namespace {

constexpr double kF32 = 4.0;

}  // namespace

StepModel::StepModel(const Config& config, int world_size, int ranks_per_node, const Hardware& hardware)
    : config_(config), hw_(hardware), world_(world_size), ep_(static_cast<int>(config.parallel.ep)),
      dp_(world_size / static_cast<int>(config.parallel.ep)), ranks_per_node_(std::max(1, ranks_per_node)) {
  config.validate(world_size);  // the same refusals as moerun (layout, batch split, memory)
  const ModelConfig& m = config.model;
  for (std::int64_t l = 0; l < m.n_layers; ++l) moe_layers_ += m.is_moe_layer(l) ? 1 : 0;
  micro_batches_ = config.micro_batches_per_rank(world_size);
  tokens_ = config.train.micro_batch * m.seq_len;
  const DType c = m.compute_dtype;
  const double a = double(dtype_size(c));
  row_bytes_ = double(m.d_model) * a;
  for (int r = 0; r < ep_; ++r) node_of_ep_rank_.push_back(r / ranks_per_node_);
  hierarchical_ = ep_ > 1 && use_hierarchical_exchange(config, node_of_ep_rank_);

  // Dense compute of one micro-batch, forward and backward: every GEMM's backward is a data
  // gradient [m, k] = [m, n] x [n, k]^T and a weight gradient [k, n] = [k, m] x [m, n].
  const double T = double(tokens_), d = double(m.d_model), heads = double(m.n_heads), hd = double(m.head_dim());
  const double b = double(config.train.micro_batch), s = double(m.seq_len), v = double(m.vocab_size);
  const double e = double(m.experts), k = double(m.top_k);
  auto gemm3 = [&](DType t, double rows, double n, double inner) {
    return hw_.gemm_seconds(t, rows, n, inner) + hw_.gemm_seconds(t, rows, inner, n, GemmRole::DataGrad) +
           hw_.gemm_seconds(t, inner, n, rows, GemmRole::WeightGrad);
  };
  const bool full = config.train.recompute == Recompute::Full;
  double block = 0.0;
  const double attention_forward =
      hw_.gemm_seconds(c, T, 3 * d, d) + hw_.gemm_seconds(c, T, d, d) + hw_.attention_seconds(c, b, s, heads, hd, false);
  block += gemm3(c, T, 3 * d, d) + gemm3(c, T, d, d) + hw_.attention_seconds(c, b, s, heads, hd, false) +
           hw_.attention_seconds(c, b, s, heads, hd, true);
  // Two norms (forward reads and writes [T, d], backward about twice that) and two residual
  // adds: memory-bound. (RoPE's rotation of q and k is not charged: a few percent of a norm.)
  const double norms = 2 * (elementwise(2 * T * d * kF32) + elementwise(4 * T * d * kF32));
  const double residual = 2 * (elementwise(3 * T * d * kF32) + elementwise(3 * T * d * kF32));
  block += norms + residual;
  double moe_dense = 0.0, dense_ffn = 0.0;
  // Router [T, E] in fp32, softmax and top-k, gathering the copies into expert order and the
  // weighted combine (forward and backward).
  moe_dense += gemm3(DType::F32, T, e, d) + elementwise(4 * T * e * kF32) + 4 * elementwise(2 * T * k * d * a);
  if (m.shared_width() > 0) moe_dense += ffn_seconds(T, double(m.shared_width()), config.train.recompute == Recompute::Moe);
  dense_ffn = ffn_seconds(T, double(m.d_ff), false);
  for (std::int64_t l = 0; l < m.n_layers; ++l) {
    dense_ += block + (m.is_moe_layer(l) ? moe_dense : dense_ffn);
    // train.recompute = full runs each block's forward again in its backward.
    if (full) dense_ += attention_forward + norms / 3 + (m.is_moe_layer(l) ? 0.0 : ffn_seconds(T, double(m.d_ff), false) / 3);
  }
  // Embedding gather and its scatter-add, the final norm, the LM head, softmax cross-entropy.
  dense_ += elementwise(2 * T * d * kF32) + elementwise(3 * T * d * kF32) + elementwise(6 * T * d * kF32);
  dense_ += gemm3(c, T, v, d) + elementwise(5 * T * v * kF32);
  dense_ *= double(micro_batches_);

  // Per step: AdamW reads parameter, gradient and both moments and writes three of them (and
  // the compute copy under mixed precision); the gradient norm reads the gradients; the next
  // step's gradients are zeroed.
  const MemoryEstimate mem = estimate_memory(config, world_size, false);
  const double params = double(mem.dense_parameters + mem.expert_parameters);
  auto update = [&](double n) {
    return n * (7 * kF32 + (c == DType::BF16 ? 2.0 : 0.0)) / (1e9 * hw_.optimizer_gbps) + elementwise(n * kF32) +
           elementwise(n * kF32);
  };
  optimizer_ = update(params);
  // A replica adds its expert's update on its rank (step() charges the busiest rank's).
  expert_update_ = update((m.expert_type == ExpertType::SwiGlu ? 3.0 : 2.0) * d * double(m.d_ff));
  experts_per_rank_ = mem.experts_per_rank;

  // Gradient all-reduce: dense over the world, experts over their expert-data-parallel copies,
  // in buckets of parallel.bucket_mb; a group that spans nodes runs at the inter-node rate.
  const double wire = config.parallel.grad_reduce_dtype == DType::BF16 ? 2.0 : kF32;
  const double bucket = std::max(1.0, config.parallel.bucket_mb * 1024 * 1024);
  auto reduce = [&](double payload, int p, bool spans_nodes) {
    if (p <= 1 || payload <= 0) return 0.0;
    const LinkFit& fit = (spans_nodes ? hw_.inter_node : hw_.intra_node).all_reduce;
    const double wire_bytes = ring_all_reduce_wire_bytes(payload, p);
    (spans_nodes ? allreduce_inter_bytes_ : allreduce_intra_bytes_) += wire_bytes;
    // A ring all-reduce of one bucket is 2 (p - 1) messages in sequence.
    return std::ceil(payload / bucket) * 2.0 * (p - 1) * fit.seconds(0.0) + wire_bytes / (1e9 * fit.gbps);
  };
  const bool world_spans = world_size > ranks_per_node_;
  const bool edp_spans = dp_ > 1 && (ep_ * (dp_ - 1)) / ranks_per_node_ > 0;
  allreduce_ = reduce(double(mem.dense_parameters) * wire, world_size, world_spans) +
               reduce(double(mem.expert_parameters) * wire, dp_, edp_spans);
  expert_grad_bytes_ = (m.expert_type == ExpertType::SwiGlu ? 3.0 : 2.0) * d * double(m.d_ff) * wire;
  allreduce_ *= 1.0 - hw_.allreduce_hidden;
  // The step's two small all-reduces (global target count; the packed step numbers).
  if (world_size > 1)
    allreduce_ += 2 * 2.0 * (world_size - 1) * (world_spans ? hw_.inter_node : hw_.intra_node).all_reduce.seconds(0.0);
}

double StepModel::elementwise(double bytes) const { return bytes / (1e9 * hw_.elementwise_gbps) + 1e-6 * hw_.kernel_overhead_us; }

double StepModel::ffn_seconds(double rows, double width, bool recompute_hidden) const {
  if (rows <= 0) return 0.0;
  const ModelConfig& m = config_.model;
  const DType c = m.compute_dtype;
  const double d = double(m.d_model), a = double(dtype_size(c));
  const double inputs = m.expert_type == ExpertType::SwiGlu ? 2.0 : 1.0;  // x W1 (and x W3)
  const double up = hw_.gemm_seconds(c, rows, width, d), down = hw_.gemm_seconds(c, rows, d, width);
  // Forward: the up projection(s), the activation, the down projection. Backward: data and
  // weight gradients of each (the up projections' data gradients summed: one GEMM each), the
  // activation's backward; recompute_hidden runs the up projections again.
  const double forward = inputs * up + down + elementwise((inputs + 1) * rows * width * a);
  const double backward = inputs * (hw_.gemm_seconds(c, rows, d, width, GemmRole::DataGrad) +
                                    hw_.gemm_seconds(c, d, width, rows, GemmRole::WeightGrad)) +
                          hw_.gemm_seconds(c, rows, width, d, GemmRole::DataGrad) +
                          hw_.gemm_seconds(c, width, d, rows, GemmRole::WeightGrad) +
                          elementwise((2 * inputs + 1) * rows * width * a) + (recompute_hidden ? inputs * up : 0.0);
  return forward + backward;
}

double StepModel::expert_seconds(double rows) const {
  return ffn_seconds(rows, double(config_.model.d_ff), config_.train.recompute != Recompute::None);
}

double StepModel::held_expert_seconds() const { return double(micro_batches_) * expert_seconds(1.0) + expert_update_; }

double StepModel::replica_reduce_bandwidth() const {
  const bool spans = ep_ > ranks_per_node_;
  return 1e9 * (spans ? hw_.inter_node : hw_.intra_node).all_reduce.gbps;
}

double StepModel::exchange_bandwidth() const {
  const bool spans = ep_ > ranks_per_node_;
  return 1e9 * (spans ? hw_.inter_node : hw_.intra_node).all_to_all.gbps;
}

StepModel::Exchange StepModel::exchange(const std::vector<double>& rows_to) const {
  // The same rows sent back (rows_to transposed) take the same time, bytes and messages: every
  // rank's sends become its receives, each node's hand-offs to its leader become the leader's
  // hand-offs to it, and each phase's busiest rank stays the busiest. Only rank 0's own sends
  // differ: rank0_bytes_back counts them, in the order the runtime's counter adds them.
  Exchange x;
  const auto p = static_cast<std::size_t>(ep_);
  auto node = [&](std::size_t r) { return node_of_ep_rank_[r]; };
  const LinkFit &intra = hw_.intra_node.all_to_all, &inter = hw_.inter_node.all_to_all;
  if (!hierarchical_) {
    // Every rank sends and receives at once, alpha per message; the slowest rank's larger
    // direction sets the time.
    std::vector<double> send_intra(p, 0.0), send_inter(p, 0.0), recv_intra(p, 0.0), recv_inter(p, 0.0);
    std::vector<double> send_latency(p, 0.0), recv_latency(p, 0.0);  // alpha per message
    for (std::size_t s = 0; s < p; ++s) {
      const double* row = &rows_to[s * p];
      for (std::size_t t = 0; t < p; ++t) {
        if (s == t || row[t] <= 0) continue;
        const double bytes = row[t] * row_bytes_;
        const bool far = node(s) != node(t);
        x.bytes += bytes;
        if (s == 0) x.rank0_bytes += bytes;
        if (t == 0) x.rank0_bytes_back += bytes;
        if (far) x.bytes_inter += bytes;
        (far ? x.messages_inter : x.messages_intra) += 1;
        (far ? send_inter : send_intra)[s] += bytes;
        (far ? recv_inter : recv_intra)[t] += bytes;
        send_latency[s] += 1e-6 * (far ? inter.alpha_us : intra.alpha_us);
        recv_latency[t] += 1e-6 * (far ? inter.alpha_us : intra.alpha_us);
      }
    }
    for (std::size_t r = 0; r < p; ++r) {
      const double out = send_latency[r] + send_intra[r] / (1e9 * intra.gbps) + send_inter[r] / (1e9 * inter.gbps);
      const double in = recv_latency[r] + recv_intra[r] / (1e9 * intra.gbps) + recv_inter[r] / (1e9 * inter.gbps);
      x.seconds = std::max(x.seconds, std::max(out, in));
    }
    return x;
  }
  // Through node leaders (parallel/node_leader_exchange), counted as the runtime counts it:
  // 1. rows within the node go directly; 2. members hand their rows for other nodes to the
  // node's leader (its lowest rank); 3. leaders exchange one message per node pair; 4. leaders
  // hand each member what arrived for it. Each phase is as slow as its busiest rank.
  const int nodes = node_of_ep_rank_.back() + 1;
  const auto n = static_cast<std::size_t>(nodes);
  std::vector<std::size_t> leader(n, p);
  for (std::size_t r = 0; r < p; ++r)
    if (leader[static_cast<std::size_t>(node(r))] == p) leader[static_cast<std::size_t>(node(r))] = r;
  auto sent = [&](std::size_t from, double bytes, bool far) {
    if (bytes <= 0) return;
    x.bytes += bytes;
    if (from == 0) x.rank0_bytes += bytes;
    if (far) x.bytes_inter += bytes;
    (far ? x.messages_inter : x.messages_intra) += 1;
  };
  // Bytes and messages per phase: each message costs its link's alpha.
  std::vector<double> direct_out(p, 0.0), direct_in(p, 0.0), to_leader(n, 0.0), from_leader(n, 0.0);
  std::vector<double> direct_out_msgs(p, 0.0), direct_in_msgs(p, 0.0), to_leader_msgs(n, 0.0), from_leader_msgs(n, 0.0);
  std::vector<double> pair(n * n, 0.0), outgoing(p, 0.0), arriving(p, 0.0);  // pair[a * n + b]: node a to node b
  for (std::size_t s = 0; s < p; ++s) {
    const double* row = &rows_to[s * p];
    for (std::size_t t = 0; t < p; ++t) {
      if (s == t || row[t] <= 0) continue;
      const double bytes = row[t] * row_bytes_;
      if (node(s) == node(t)) {
        sent(s, bytes, false);  // 1.
        if (t == 0) x.rank0_bytes_back += bytes;
        direct_out[s] += bytes;
        direct_in[t] += bytes;
        direct_out_msgs[s] += 1;
        direct_in_msgs[t] += 1;
      } else {
        outgoing[s] += bytes;
        arriving[t] += bytes;
        pair[static_cast<std::size_t>(node(s)) * n + static_cast<std::size_t>(node(t))] += bytes;
      }
    }
    if (leader[static_cast<std::size_t>(node(s))] != s && outgoing[s] > 0) {  // 2.
      sent(s, outgoing[s], false);
      to_leader[static_cast<std::size_t>(node(s))] += outgoing[s];
      to_leader_msgs[static_cast<std::size_t>(node(s))] += 1;
    }
  }
  double phase3 = 0.0;
  for (std::size_t a = 0; a < n; ++a) {
    double out = 0.0, in = 0.0;
    for (std::size_t b = 0; b < n; ++b) {
      if (a == b) continue;
      sent(leader[a], pair[a * n + b], true);  // 3.
      if (a == 0) x.rank0_bytes_back += pair[b * n];  // rank 0 leads node 0
      out += pair[a * n + b] / (1e9 * inter.gbps) + (pair[a * n + b] > 0 ? 1e-6 * inter.alpha_us : 0.0);
      in += pair[b * n + a] / (1e9 * inter.gbps) + (pair[b * n + a] > 0 ? 1e-6 * inter.alpha_us : 0.0);
    }
    phase3 = std::max(phase3, std::max(out, in));
  }
  for (std::size_t t = 0; t < p; ++t) {  // 4.
    const std::size_t l = leader[static_cast<std::size_t>(node(t))];
    if (l == t) continue;
    if (l == 0 && outgoing[t] > 0) x.rank0_bytes_back += outgoing[t];
    if (arriving[t] <= 0) continue;
    sent(l, arriving[t], false);
    from_leader[static_cast<std::size_t>(node(t))] += arriving[t];
    from_leader_msgs[static_cast<std::size_t>(node(t))] += 1;
  }
  const double a_intra = 1e-6 * intra.alpha_us, bw_intra = 1e9 * intra.gbps;
  double phase1 = 0.0, phase2 = 0.0, phase4 = 0.0;
  for (std::size_t r = 0; r < p; ++r)
    phase1 = std::max(phase1, std::max(direct_out_msgs[r] * a_intra + direct_out[r] / bw_intra,
                                       direct_in_msgs[r] * a_intra + direct_in[r] / bw_intra));
  for (std::size_t a = 0; a < n; ++a) {
    phase2 = std::max(phase2, to_leader_msgs[a] * a_intra + to_leader[a] / bw_intra);
    phase4 = std::max(phase4, from_leader_msgs[a] * a_intra + from_leader[a] / bw_intra);
  }
  x.seconds = phase1 + phase2 + phase3 + phase4;
  return x;
}

StepTime StepModel::step(const Routing& routed, const std::vector<Placement>& placements) const {
  const ModelConfig& m = config_.model;
  MOERUN_CHECK(static_cast<int>(routed.size()) == moe_layers_ && static_cast<int>(placements.size()) == moe_layers_,
               RuntimeError, "[sim] routing for {} layers and {} placements; the config has {} MoE layers", routed.size(),
               placements.size(), moe_layers_);
  StepTime t;
  t.dense = dense_;
  t.optimizer = optimizer_;
  t.allreduce = allreduce_;
  t.allreduce_bytes_intra_node = allreduce_intra_bytes_;
  t.allreduce_bytes_inter_node = allreduce_inter_bytes_;
  const auto p = static_cast<std::size_t>(ep_);
  const auto experts = static_cast<std::size_t>(m.experts);
  const double mb = double(micro_batches_);
  const double capacity = m.capacity_factor > 0 ? double(m.capacity(tokens_)) : 1e300;  // per source, expert, micro-batch
  t.expert_copies.assign(routed.size(), std::vector<double>(experts, 0.0));
  // Replicas' optimizer updates: the rank holding the most experts beyond its own updates longest.
  std::vector<double> extra(p, 0.0);
  for (const Placement& pl : placements) {
    const std::vector<int> held = pl.slots_used_per_rank();
    for (std::size_t r = 0; r < p; ++r) extra[r] += double(std::max<std::int64_t>(0, held[r] - experts_per_rank_));
  }
  t.optimizer += *std::max_element(extra.begin(), extra.end()) * expert_update_;
  std::vector<double> rows(p * experts), copies(p * p);
  for (std::size_t l = 0; l < routed.size(); ++l) {
    const Placement& pl = placements[l];
    double layer_expert = 0.0, layer_a2a = 0.0;
    // Replicated experts' gradients are summed over their replicas inside the EP group, one
    // expert after another on each rank; the step waits for the rank with the most. A replica
    // set on one node reduces at the intra-node rate.
    std::vector<double> reduce_seconds(p, 0.0);
    for (std::size_t e = 0; e < experts; ++e) {
      const std::vector<Replica>& replicas = pl.replicas(static_cast<int>(e));
      const auto k = static_cast<int>(replicas.size());
      if (k < 2) continue;
      const int first_node = node_of_ep_rank_[static_cast<std::size_t>(replicas.front().rank)];
      bool spans = false;
      for (const Replica& r : replicas) spans = spans || node_of_ep_rank_[static_cast<std::size_t>(r.rank)] != first_node;
      const LinkFit& fit = (spans ? hw_.inter_node : hw_.intra_node).all_reduce;
      const double seconds = 2.0 * (k - 1) * fit.seconds(0.0) + ring_all_reduce_wire_bytes(expert_grad_bytes_, k) / (1e9 * fit.gbps);
      for (const Replica& r : replicas) reduce_seconds[static_cast<std::size_t>(r.rank)] += seconds;
    }
    t.allreduce += *std::max_element(reduce_seconds.begin(), reduce_seconds.end());
    std::vector<char> holds(p * experts, 0);  // holds[s * experts + e]: rank s has a replica of e
    std::vector<double> shares(experts, 0.0);  // each expert's replicas' shares, summed
    for (std::size_t e = 0; e < experts; ++e)
      for (const Replica& r : pl.replicas(static_cast<int>(e))) {
        holds[static_cast<std::size_t>(r.rank) * experts + e] = 1;
        shares[e] += double(r.share);
      }
    for (int g = 0; g < dp_; ++g) {
      // Copies per micro-batch: rows[rank * experts + expert] at the experts, copies[src * p + dst]
      // exchanged (flat, and reused: at EP 1024 each is megabytes).
      std::fill(rows.begin(), rows.end(), 0.0);
      std::fill(copies.begin(), copies.end(), 0.0);
      for (std::size_t s = 0; s < p; ++s) {
        const std::vector<double>& mine = routed[l][static_cast<std::size_t>(g) * p + s];
        for (std::size_t e = 0; e < experts; ++e) {
          const double kept = std::min(mine[e] / mb, capacity);
          if (kept <= 0) continue;
          t.expert_copies[l][e] += mb * kept / double(dp_);
          if (holds[s * experts + e] != 0) {
            rows[s * experts + e] += kept;
            copies[s * p + s] += kept;
            continue;
          }
          for (const Replica& r : pl.replicas(static_cast<int>(e))) {
            const double part = kept * double(r.share) / shares[e];
            rows[static_cast<std::size_t>(r.rank) * experts + e] += part;
            copies[s * p + static_cast<std::size_t>(r.rank)] += part;
          }
        }
      }
      std::vector<double> rank_seconds(p, 0.0), rank_copies(p, 0.0);
      for (std::size_t r = 0; r < p; ++r)
        for (std::size_t e = 0; e < experts; ++e) {
          const double n = rows[r * experts + e];
          if (n > 0) rank_seconds[r] += expert_seconds(n), rank_copies[r] += n;
        }
      if (g == 0) {
        t.rank_expert_seconds.resize(p, 0.0);
        t.rank_copies.resize(p, 0.0);
        for (std::size_t r = 0; r < p; ++r) t.rank_expert_seconds[r] += mb * rank_seconds[r], t.rank_copies[r] += mb * rank_copies[r];
      }
      layer_expert = std::max(layer_expert, *std::max_element(rank_seconds.begin(), rank_seconds.end()));
      const double mean = std::accumulate(rank_copies.begin(), rank_copies.end(), 0.0) / double(p);
      if (mean > 0) t.imbalance = std::max(t.imbalance, *std::max_element(rank_copies.begin(), rank_copies.end()) / mean);
      if (ep_ > 1) {
        // The forward dispatch and the backward of the combine send `copies`; the forward
        // combine and the backward of the dispatch send them back (the same exchange() cost);
        // plus the counts.
        const bool spans = ep_ > ranks_per_node_;
        // The counts: one small message to every other rank of the group.
        double seconds = 1e-6 * (spans ? hw_.inter_node : hw_.intra_node).all_to_all.alpha_us * double(p - 1);
        const Exchange x = exchange(copies);
        seconds += 4 * x.seconds;
        t.a2a_bytes += 4 * mb * x.bytes;
        if (g == 0) t.a2a_bytes_rank0 += 2 * mb * (x.rank0_bytes + x.rank0_bytes_back);
        t.a2a_bytes_inter_node += 4 * mb * x.bytes_inter;
        t.a2a_messages_intra_node += 4 * mb * x.messages_intra;
        t.a2a_messages_inter_node += 4 * mb * x.messages_inter;
        layer_a2a = std::max(layer_a2a, seconds);
      }
    }
    t.expert += mb * layer_expert;
    t.all_to_all += mb * layer_a2a;
  }
  return t;
}

}  // namespace moerun::sim
