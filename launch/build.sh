#!/usr/bin/env bash
# Installs the dependencies (launch/setup-deps.sh), then configures and builds moerun with
# the `release` CMake preset into build/release. Extra arguments go to the build step.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" "$@"
