#!/usr/bin/env bash
# Installs the Debian packages moerun builds and tests with. Idempotent: packages already
# present are not fetched again, and apt's index is refreshed only when something is missing.
# Uses sudo when not run as root. Both README commands and .ci/run call this first.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libopenmpi-dev openmpi-bin
  libeigen3-dev libdnnl-dev libhdf5-openmpi-dev
  # Debian's oneDNN is built with its OpenCL GPU runtime, and its CMake config looks
  # for OpenCL even though moerun only uses the CPU engine.
  ocl-icd-opencl-dev
  libbenchmark-dev libgtest-dev
  libtomlplusplus-dev libcli11-dev nlohmann-json3-dev libfmt-dev
  libsentencepiece-dev
  python3-h5py python3-numpy python3-matplotlib
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

echo "setup-deps: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
