#!/usr/bin/env bash
# Runs moerun under mpirun on this machine with sensible defaults, and prints the exact
# mpirun line first. Everything after the options goes to moerun.
#
#   launch/moerun-local.sh [-n RANKS] [--oversubscribe] [--] [moerun arguments...]
#
#   -n RANKS          ranks to start (default: $MOERUN_RANKS or 1)
#   --oversubscribe   allow more ranks than cores (correctness runs; timings are meaningless)
# Ranks are bound one per core when they fit. As root, the variables Open MPI requires to
# run as root are set. MOERUN_BIN overrides the executable (default build/release/bin/moerun).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ranks=${MOERUN_RANKS:-1}
oversubscribe=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n) ranks=$2; shift 2 ;;
    --oversubscribe) oversubscribe=1; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
bin=${MOERUN_BIN:-$here/build/release/bin/moerun}
[ -x "$bin" ] || { echo "moerun-local: $bin not found; build first: bash launch/build.sh" >&2; exit 1; }
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc alone obeys OMP_NUM_THREADS
args=(-np "$ranks")
if [ "$ranks" -gt "$cores" ]; then
  if [ "$oversubscribe" -eq 0 ]; then
    echo "moerun-local: $ranks ranks > $cores cores; pass --oversubscribe to run anyway (fine for correctness, not for timing)" >&2
    exit 1
  fi
  args+=(--oversubscribe --bind-to none)
else
  args+=(--bind-to core --map-by core)
fi
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Containers often lack the kernel support for vader's single-copy path; plain copies work.
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
echo "+ mpirun ${args[*]} $bin $*"
exec mpirun "${args[@]}" "$bin" "$@"
