#!/usr/bin/env bash
# The README's main command: set up, build, then a short training run of the default MoE
# model on the built-in synthetic tasks, under mpirun. Extra arguments go to moerun
# (e.g. --set train.steps=300). The run directory is runs/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/build.sh
bash launch/moerun-local.sh -n "${MOERUN_RANKS:-1}" -- --run-dir runs/quickstart "$@"
