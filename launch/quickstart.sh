#!/usr/bin/env bash
# The README's main command: set up, build, then run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/build.sh
echo "== kernel self-check: every kernel against its Eigen reference and finite differences"
build/release/tests/test_kernels --gtest_brief=1
echo "== matmul through kernels/ vs oneDNN direct (GFLOP/s, overhead_pct)"
build/release/bench/bench_matmul --benchmark_filter='BM_MatmulVsDirect/tokens:1024/d:512/ff:2048' \
  --benchmark_counters_tabular=true
