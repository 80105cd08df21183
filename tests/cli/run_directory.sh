#!/usr/bin/env bash
# Run directories are safe to reuse by mistake (issue 14):
#  1. a fresh run into a directory holding checkpoints refuses, naming --resume and --overwrite,
#     and the checkpoints stay readable; --overwrite moves the old contents aside;
#  2. a second live job in a directory refuses at once, naming the holder; a stale lock (its
#     process gone) is taken over with a warning;
#  3. keep-rotation never deletes the checkpoint just written, even below older, higher steps;
#  4. checkpoint.at_end = false writes none at the end, and a signal still writes one.
#   run_directory.sh MOERUN MOERUN_CKPT WORKDIR
set -u
moerun=$1 ckpt=$2 work=$3
rm -rf "$work" "$work".*
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
common=(--set model.d_model=32 --set model.n_heads=2 --set model.d_ff=48 --set model.seq_len=32 --set model.n_layers=2
        --set train.global_batch=8 --set train.micro_batch=2 --set eval.every=0 --set eval.examples=0
        --set eval.heldout_batches=1 --set log.progress=lines)

echo "== 1. fresh run over checkpoints"
"$moerun" "${common[@]}" --set train.steps=3 --run-dir "$work/a" > "$work/a1.log" 2>&1 || fail "first run failed"
"$moerun" "${common[@]}" --set train.steps=2 --run-dir "$work/a" > "$work/a2.log" 2>&1 && fail "a fresh run over checkpoints was accepted"
grep -q "already holds checkpoints (step_00000003.h5); continue that run with --resume .* or start over with --overwrite" \
  "$work/a2.log" || { cat "$work/a2.log"; fail "the refusal does not say what to do"; }
"$ckpt" verify "$work/a" > /dev/null || fail "the refused run damaged the checkpoints"
"$moerun" "${common[@]}" --set train.steps=2 --run-dir "$work/a" --overwrite > "$work/a3.log" 2>&1 || fail "--overwrite failed"
aside=$(ls -d "$work"/a.replaced-* 2>/dev/null | head -1)
[ -n "$aside" ] && [ -f "$aside/checkpoints/step_00000003.h5" ] || fail "--overwrite did not keep the old run aside"
[ "$(cat "$work/a/checkpoints/latest")" = "step_00000002.h5" ] || fail "--overwrite did not start a new run"

echo "== 2. a live job holds the directory; a stale lock is taken over"
"$moerun" "${common[@]}" --set train.steps=100000 --run-dir "$work/b" > "$work/b1.log" 2>&1 &
holder=$!
for _ in $(seq 1 300); do [ "$(wc -l 2>/dev/null < "$work/b/metrics.jsonl" || echo 0)" -ge 2 ] && break; sleep 0.1; done
start=$(date +%s)
"$moerun" "${common[@]}" --set train.steps=2 --run-dir "$work/b" > "$work/b2.log" 2>&1 && fail "a second live job was accepted"
grep -q "is in use by process $holder on" "$work/b2.log" || { cat "$work/b2.log"; fail "the refusal does not name the holder"; }
[ $(( $(date +%s) - start )) -lt 20 ] || fail "the refusal was not immediate"
kill -TERM "$holder"; wait "$holder" || fail "the holder did not stop cleanly on SIGTERM"
[ ! -e "$work/b/moerun.lock" ] || fail "the lock outlived its job"
mkdir -p "$work/c"
echo "$(hostname) 999999 - 2026-01-01 00:00:00" > "$work/c/moerun.lock"
"$moerun" "${common[@]}" --set train.steps=2 --run-dir "$work/c" > "$work/c.log" 2>&1 || { cat "$work/c.log"; fail "a stale lock blocked the run"; }
grep -q "taking over the stale lock" "$work/c.log" || fail "no warning when taking over a stale lock"
# A fresh lock from another host: refused; but a requeued Slurm job (same job id) takes over its
# earlier incarnation's lock.
mkdir -p "$work/d"
echo "otherhost 12345 777 2026-01-01 00:00:00" > "$work/d/moerun.lock"
"$moerun" "${common[@]}" --set train.steps=2 --run-dir "$work/d" > "$work/d1.log" 2>&1 && fail "a fresh lock of another host was ignored"
grep -q "is in use by process 12345 on otherhost" "$work/d1.log" || { cat "$work/d1.log"; fail "the refusal does not name the other host"; }
SLURM_JOB_ID=777 "$moerun" "${common[@]}" --set train.steps=2 --run-dir "$work/d" > "$work/d2.log" 2>&1 \
  || { cat "$work/d2.log"; fail "a requeued Slurm job could not take over its own lock"; }
grep -q "an earlier run of this Slurm job (777)" "$work/d2.log" || fail "no note that the lock was this job's"

echo "== 3. keep-rotation keeps the checkpoint just written"
for s in 400 500 600; do cp "$work/a/checkpoints/step_00000002.h5" "$work/a/checkpoints/step_00000$s.h5"; done
"$moerun" "${common[@]}" --set train.steps=4 --set checkpoint.keep=1 --resume "$work/a/checkpoints/step_00000002.h5" \
  > "$work/rot.log" 2>&1 || { cat "$work/rot.log"; fail "resume failed"; }
[ "$(cat "$work/a/checkpoints/latest")" = "step_00000004.h5" ] || fail "latest does not name the new checkpoint"
"$ckpt" verify "$work/a" > /dev/null || fail "rotation deleted the checkpoint that latest names"
echo "== 4. checkpoint.at_end = false"
"$moerun" "${common[@]}" --set train.steps=2 --set checkpoint.at_end=false --run-dir "$work/e" > "$work/e1.log" 2>&1 \
  || { cat "$work/e1.log"; fail "a run without the checkpoint at the end failed"; }
[ -z "$(ls "$work/e/checkpoints" 2>/dev/null)" ] || fail "checkpoint.at_end = false still wrote a checkpoint"
grep -q '"step":2' "$work/e/metrics.jsonl" || fail "the run without a checkpoint at the end did not train"
"$moerun" "${common[@]}" --set train.steps=100000 --set checkpoint.at_end=false --run-dir "$work/f" > "$work/f1.log" 2>&1 &
holder=$!
# Signal it once it is training (signals are taken at step boundaries from the first step on).
for _ in $(seq 1 1200); do grep -q '"step":2,' "$work/f/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
kill -TERM "$holder"
wait "$holder" || { cat "$work/f1.log"; fail "a run without the checkpoint at the end did not stop cleanly on SIGTERM"; }
"$ckpt" verify "$work/f" > /dev/null || { cat "$work/f1.log"; fail "SIGTERM did not write a checkpoint when checkpoint.at_end = false"; }
echo "run directories: all checks passed"
