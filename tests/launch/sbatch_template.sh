#!/usr/bin/env bash
# The Slurm template cannot run here: check its syntax, then run it with a fake Slurm
# environment (srun and scontrol replaced by recorders) and check the command it renders, the
# resume on requeue, and the USR1 -> checkpoint -> requeue path.
#   sbatch_template.sh <moerun.sbatch>
set -euo pipefail
template=$1
bash -n "$template"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/submit/build/release/bin"
printf '#!/bin/sh\nexit 0\n' > "$work/submit/build/release/bin/moerun"
# Fake srun: records its arguments; with FAKE_SRUN_WAIT it waits for USR1, records it, exits 0
# (as moerun does after its checkpoint).
cat > "$work/bin/srun" <<'FAKE'
#!/bin/bash
echo "srun $*" >> "$FAKE_LOG"
if [ -n "${FAKE_SRUN_WAIT:-}" ]; then
  trap 'echo "srun got USR1" >> "$FAKE_LOG"; exit 0' USR1
  touch "$FAKE_LOG.ready"
  for _ in $(seq 1 200); do sleep 0.05; done
  echo "srun never got USR1" >> "$FAKE_LOG"; exit 3
fi
FAKE
printf '#!/bin/sh\necho "scontrol $*" >> "$FAKE_LOG"\n' > "$work/bin/scontrol"
chmod +x "$work/bin/srun" "$work/bin/scontrol" "$work/submit/build/release/bin/moerun"

export PATH="$work/bin:$PATH" FAKE_LOG="$work/log" SLURM_JOB_ID=4242 SLURM_JOB_NAME=moerun \
       SLURM_SUBMIT_DIR="$work/submit" SLURM_NNODES=2 SLURM_NTASKS=16 SLURM_NTASKS_PER_NODE=8 SLURM_CPUS_PER_TASK=1
run_dir="$work/submit/runs/moerun-4242"
fail() { echo "FAIL: $*"; echo "--- log:"; cat "$work/log" 2>/dev/null; exit 1; }

# 1. First start: the rendered command line.
bash "$template" --set parallel.ep=8 > "$work/out1"
grep -q "^srun --kill-on-bad-exit=1 --cpu-bind=cores $work/submit/build/release/bin/moerun --run-dir $run_dir --set parallel.ep=8\$" "$work/log" \
  || fail "unexpected srun command"
grep -q -- "--resume" "$work/log" && fail "resumed without a checkpoint"

# 2. A requeued job finds the checkpoint and resumes.
mkdir -p "$run_dir/checkpoints" && echo step_10.h5 > "$run_dir/checkpoints/latest"
: > "$work/log"
bash "$template" --set parallel.ep=8 > "$work/out2"
grep -q -- "--run-dir $run_dir --set parallel.ep=8 --resume $run_dir\$" "$work/log" || fail "no --resume after requeue"

# Runs the template with a fake srun that waits for USR1, sends SIGNAL to the script once the
# launcher runs, and checks that the script exits 0.
signal_script() {
  : > "$work/log"
  rm -f "$work/log.ready"
  FAKE_SRUN_WAIT=1 bash "$template" > "$work/out_$1" &
  local script=$!
  for _ in $(seq 1 100); do [ -e "$work/log.ready" ] && break; sleep 0.05; done
  [ -e "$work/log.ready" ] || fail "fake srun never started"
  kill "-$1" "$script"
  wait "$script" || fail "the script exited non-zero after $1"
  grep -q "srun got USR1" "$work/log" || fail "$1 did not reach the launcher as USR1"
}

# 3. The time-limit signal reaches the ranks and the job is requeued.
signal_script USR1
grep -q "^scontrol requeue 4242\$" "$work/log" || fail "the job was not requeued"

# 3b. SIGTERM (scancel): the ranks checkpoint (they get USR1, which launchers forward), the
#     script exits 0, and the job is not requeued.
signal_script TERM
grep -q "scontrol requeue" "$work/log" && fail "a cancelled (TERM) job was requeued"

# 4. mpirun as the launcher: each rank bound to its --cpus-per-task cores.
: > "$work/log"
printf '#!/bin/sh\necho "mpirun $*" >> "$FAKE_LOG"\n' > "$work/bin/mpirun" && chmod +x "$work/bin/mpirun"
SLURM_CPUS_PER_TASK=4 MOERUN_LAUNCHER=mpirun bash "$template" > "$work/out4"
grep -q "^mpirun -np 16 --map-by ppr:8:node:PE=4 --bind-to core " "$work/log" || fail "unexpected mpirun command"

# 5. The printed command line is quoted: pasted into a shell it gives the same arguments.
: > "$work/log"
bash "$template" --set 'data.source=my corpus.txt' > "$work/out5"
printed=$(sed -n 's/^moerun.sbatch: job .* rank(s): //p' "$work/out5")
[ -n "$printed" ] || fail "no command line printed"
eval "set -- $printed"
found=""
for arg in "$@"; do [ "$arg" = "data.source=my corpus.txt" ] && found=1; done
[ -n "$found" ] || fail "the printed command line does not paste back: $printed"
echo "sbatch template: syntax, rendering, resume, signal forwarding and requeue OK"
