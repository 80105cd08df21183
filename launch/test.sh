#!/usr/bin/env bash
# The whole test suite on a fresh machine: dependencies, release build, then every CTest
# test (kernel checks, single- and multi-rank tests under mpirun). What CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/build.sh
ctest --preset release -j "$(nproc)" "$@"
