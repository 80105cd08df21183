#!/usr/bin/env bash
# Checkpoint behaviour of the whole program:
#  1. a rank dies while the second checkpoint is being written: the job fails, the first
#     checkpoint and `latest` stay valid, and the run resumes from it;
#  2. SIGUSR1 through mpirun, and SIGTERM to a single process: the step finishes, a checkpoint
#     is written, exit code 0;
#  3. moerun-ckpt answers every command (text and --json) and diff/verify exit codes are right;
#  4. python3-h5py reads the format (skipped, with a message, when no interpreter has h5py).
#   crash_and_signals.sh MOERUN MOERUN_CKPT MPIEXEC WORKDIR
set -u
moerun=$1 ckpt=$2 mpiexec=$3 work=$4
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
# Waits (up to 30 s) until a run has logged 3 steps, so that a signal lands mid-training.
wait_for_steps() {
  for _ in $(seq 1 300); do [ "$(wc -l < "$1/metrics.jsonl" 2>/dev/null || echo 0)" -ge 3 ] && return; sleep 0.1; done
}
common=(--set model.d_model=32 --set model.n_heads=2 --set model.d_ff=48 --set model.seq_len=32 --set model.n_layers=2
        --set train.global_batch=8 --set train.micro_batch=2 --set eval.every=0 --set eval.examples=0
        --set eval.heldout_batches=1 --set log.progress=lines)

echo "== 1. a rank dies while writing the step-6 checkpoint"
MOERUN_TEST_CRASH_IN_CHECKPOINT=6:1 "$mpiexec" -np 2 --oversubscribe "$moerun" "${common[@]}" --set parallel.ep=2 \
  --set train.steps=8 --set checkpoint.every=3 --run-dir "$work/crash" > "$work/crash.log" 2>&1
code=$?
[ "$code" -ne 0 ] || fail "the job survived a rank dying (exit $code)"
[ "$(cat "$work/crash/checkpoints/latest")" = "step_00000003.h5" ] || fail "latest moved to a checkpoint that was never completed"
[ ! -e "$work/crash/checkpoints/step_00000006.h5" ] || fail "an incomplete step 6 checkpoint carries the final name"
"$ckpt" verify "$work/crash" || fail "the previous checkpoint is not readable after the crash"
"$mpiexec" -np 2 --oversubscribe "$moerun" "${common[@]}" --set parallel.ep=2 --set train.steps=8 \
  --resume "$work/crash" > "$work/resume.log" 2>&1 || { cat "$work/resume.log"; fail "resume after the crash failed"; }
grep -q "resumed from .*step_00000003.h5 (step 3" "$work/resume.log" || fail "did not resume from step 3"
"$ckpt" verify "$work/crash/checkpoints/step_00000008.h5" || fail "the checkpoint written after resuming does not verify"

echo "== 2a. SIGUSR1 through mpirun"
"$mpiexec" -np 2 --oversubscribe "$moerun" "${common[@]}" --set train.steps=100000 --run-dir "$work/usr1" > "$work/usr1.log" 2>&1 &
pid=$!
wait_for_steps "$work/usr1"
kill -USR1 "$pid"
wait "$pid"
code=$?
[ "$code" -eq 0 ] || { cat "$work/usr1.log"; fail "SIGUSR1: exit code $code, expected 0"; }
grep -q "signal received: checkpoint written" "$work/usr1.log" || fail "SIGUSR1: no checkpoint message"
"$ckpt" verify "$work/usr1" || fail "SIGUSR1: the checkpoint does not verify"

echo "== 2b. SIGTERM to one process"
"$moerun" "${common[@]}" --set train.steps=100000 --run-dir "$work/term" > "$work/term.log" 2>&1 &
pid=$!
wait_for_steps "$work/term"
kill -TERM "$pid"
wait "$pid"
code=$?
[ "$code" -eq 0 ] || { cat "$work/term.log"; fail "SIGTERM: exit code $code, expected 0"; }
"$ckpt" verify "$work/term" || fail "SIGTERM: the checkpoint does not verify"

echo "== 3. moerun-ckpt"
file="$work/crash/checkpoints/step_00000008.h5"
for cmd in info ls stats placement verify; do
  "$ckpt" "$cmd" "$file" > "$work/$cmd.txt" || fail "moerun-ckpt $cmd failed"
  "$ckpt" "$cmd" "$file" --json > "$work/$cmd.json" || fail "moerun-ckpt $cmd --json failed"
done
grep -q "step 8" "$work/info.txt" || fail "info does not show the step"
grep -q "/model/layers/0/moe/experts/w1" "$work/ls.txt" || fail "ls does not list the expert tensors"
"$ckpt" show "$file" layers.0.moe.router --values 3 | grep -q "L2" || fail "show gives no statistics"
"$ckpt" diff "$file" "$file" > /dev/null || fail "diff of a file with itself reports differences"
if "$ckpt" diff "$file" "$work/crash/checkpoints/step_00000003.h5" > /dev/null; then fail "diff of different steps exits 0"; fi
"$ckpt" diff "$file" "$work/crash/checkpoints/step_00000003.h5" --atol 1e9 > /dev/null || fail "diff ignores --atol"
if "$ckpt" verify "$work/no_such_file.h5" 2> /dev/null; then fail "verify of a missing file exits 0"; fi
for py in /usr/bin/python3 python3; do
  if command -v "$py" > /dev/null && "$py" -c "import json" 2> /dev/null; then
    for cmd in info ls stats placement verify; do "$py" -c "import json,sys; json.load(open(sys.argv[1]))" "$work/$cmd.json" || fail "$cmd --json is not JSON"; done
    break
  fi
done

echo "== 4. h5py"
h5py_python=""
for py in /usr/bin/python3 python3; do
  if command -v "$py" > /dev/null && "$py" -c "import h5py, numpy" 2> /dev/null; then h5py_python=$py; break; fi
done
if [ -z "$h5py_python" ]; then
  echo "SKIP h5py check: no python3 with h5py and numpy (apt-get install python3-h5py)"
else
  "$h5py_python" - "$file" <<'PY' || fail "h5py could not read the checkpoint"
import sys, zlib, json
import h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    fmt = f.attrs["format"]
    assert (fmt.decode() if isinstance(fmt, bytes) else fmt) == "moerun-checkpoint", fmt
    assert int(f.attrs["step"]) == 8
    cfg = json.loads(f.attrs["config"])
    w1 = f["/model/layers/0/moe/experts/w1"]
    assert w1.shape == (cfg["model"]["experts"], cfg["model"]["d_model"], cfg["model"]["d_ff"]), w1.shape
    data = np.asarray(w1, dtype="<f4")
    for e in range(w1.shape[0]):
        assert zlib.crc32(data[e].tobytes()) == int(w1.attrs["crc32_rows"][e]), e
    assert zlib.crc32(data.tobytes()) == int(w1.attrs["crc32"]) & 0xffffffff
    print("h5py read", len(list(f["/model"].keys())), "top-level model groups; checksums match")
PY
fi
echo "all checkpoint program checks passed"
