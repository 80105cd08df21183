#!/usr/bin/env bash
# The README's main command: set up, build, then a short training run of the default MoE
# model on the built-in synthetic tasks under mpirun: 2 ranks, experts sharded over both
# (parallel.ep=2). Extra arguments go to moerun (e.g. --set train.steps=300). MOERUN_RANKS and
# MOERUN_EP change the layout. The run directory is runs/quickstart, replaced at each run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/build.sh
ranks=${MOERUN_RANKS:-2}
# The demo's own directory starts fresh each time (moerun refuses a fresh run over checkpoints).
[ -d runs/quickstart ] && echo "quickstart: replacing the previous runs/quickstart" && rm -rf runs/quickstart
bash launch/moerun-local.sh -n "$ranks" -- --set parallel.ep="${MOERUN_EP:-$ranks}" --run-dir runs/quickstart "$@"
