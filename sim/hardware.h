// Hardware: what the step simulator needs to know about a machine, read from a TOML file.
// Either measured on this machine by `moerun-sim calibrate` (GEMM and attention rates as
// tables over shapes, memory-bound rates, MPI alpha-beta fits) or taken from a public
// specification (peak rates with an efficiency; the file says `source = "specification"`,
// and every figure derived from it is a projection, not a measurement). docs/scaling.md
// lists the fields; sim/hardware/*.toml are the presets.
#pragma once

#include <string>
#include <vector>

#include "runtime/dtype.h"

namespace moerun::sim {

// A rate (GFLOP/s) measured on a grid of shapes, interpolated in log space (clamped at the edges).
struct RateTable {
  std::vector<double> rows, cols, inner;  // GEMM: M, N, K; attention: sequence lengths in `rows` only
  std::vector<double> gflops;             // row-major over rows x cols x inner (or rows alone)
  bool empty() const { return gflops.empty(); }
  double at(double m, double n = 1, double k = 1) const;
};

// The analytic rate of a specification: peak x efficiency, with small row counts slower
// (rate x rows / (rows + half_rows)).
struct PeakRate {
  double tflops = 0.0;
  double efficiency = 1.0;
  double half_rows = 0.0;
  double gflops(double rows) const { return 1000.0 * tflops * efficiency * rows / (rows + half_rows); }
};

// alpha (latency of one message: an all-to-all sends one to every peer, a ring all-reduce 2 (p - 1)
// in sequence) + bytes / bandwidth.
struct LinkFit {
  double alpha_us = 0.0;
  double gbps = 1.0;  // GB/s (1e9 bytes/s)
  double seconds(double bytes) const { return 1e-6 * alpha_us + bytes / (1e9 * gbps); }
};

struct Link {
  LinkFit all_to_all;  // per rank: its bytes sent in one all-to-all-v
  LinkFit all_reduce;  // per rank: its bytes on the wire in a ring all-reduce, 2 (p - 1) / p x payload
};

// The three products of a linear layer's training step, which kernels run at different rates:
// forward c = a b; data gradient c = a b^T; weight gradient c (+)= a^T b, accumulated in fp32.
enum class GemmRole { Forward, DataGrad, WeightGrad };

struct GemmTables {
  RateTable forward, data_grad, weight_grad;
  const RateTable& of(GemmRole role) const;
  bool empty() const { return forward.empty(); }
};

struct Hardware {
  std::string name, source, description;  // source: "measured" or "specification"
  std::string path;                       // the file it came from
  int ranks_per_node = 1;
  double kernel_overhead_us = 0.0;  // fixed cost of one kernel call
  double elementwise_gbps = 1.0;    // norms, activations, permutations, losses: bytes moved / s
  double optimizer_gbps = 1.0;      // AdamW: bytes moved / s
  GemmTables gemm_f32, gemm_bf16;         // measured
  RateTable attention_f32, attention_bf16;  // measured
  PeakRate gemm_peak_f32, gemm_peak_bf16, attention_peak_f32, attention_peak_bf16;  // specification
  Link intra_node, inter_node;
  double allreduce_hidden = 0.0;  // fraction of the gradient all-reduce hidden behind backward

  // Seconds of one GEMM with output [m, n] and inner dimension k.
  double gemm_seconds(DType dtype, double m, double n, double k, GemmRole role = GemmRole::Forward) const;
  // Seconds of causal attention forward (or backward) over batch x heads sequences of `seq`.
  double attention_seconds(DType dtype, double batch, double seq, double heads, double head_dim, bool backward) const;
  bool measured() const { return source == "measured"; }
};

// Reads and checks a hardware file: a missing, non-numeric or negative field throws a
// ConfigError naming the file and the field.
Hardware load_hardware(const std::string& path);
// Writes one back (what calibrate measured).
void save_hardware(const Hardware& hw, const std::string& path);

// FLOPs the simulator charges for attention: 2 GEMMs of b h s^2 hd multiply-adds forward, full
// square (what the kernel computes), twice that backward.
double attention_flops(double batch, double seq, double heads, double head_dim, bool backward);

}  // namespace moerun::sim
