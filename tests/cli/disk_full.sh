#!/usr/bin/env bash
# A checkpoint that does not fit (issue 14): on a 4 MiB tmpfs, a run checkpointing every step
# must stop with a message saying no space is left, exit 1 (not crash), leave no temporary
# file, and keep `latest` and the earlier checkpoints readable. Needs to mount a tmpfs (root
# in a container that allows it); otherwise it is skipped (exit 77).
#   disk_full.sh MOERUN MOERUN_CKPT WORKDIR
set -u
moerun=$1 ckpt=$2 work=$3
fail() { echo "FAIL: $*" >&2; umount "$work/fs" 2>/dev/null; exit 1; }
umount "$work/fs" 2>/dev/null
rm -rf "$work"
mkdir -p "$work/fs"
mount -t tmpfs -o size=4m tmpfs "$work/fs" 2>/dev/null || { echo "SKIP: cannot mount a tmpfs here"; exit 77; }
"$moerun" --set model.d_model=32 --set model.n_heads=2 --set model.d_ff=48 --set model.seq_len=32 --set model.n_layers=2 \
  --set train.global_batch=8 --set train.micro_batch=2 --set eval.every=0 --set eval.examples=0 --set eval.heldout_batches=1 \
  --set train.steps=20 --set checkpoint.every=1 --set checkpoint.keep=20 --run-dir "$work/fs/run" > "$work/run.log" 2>&1
code=$?
[ "$code" -eq 1 ] || { cat "$work/run.log"; fail "exit code $code, expected 1 (no crash)"; }
grep -q "no space left for step" "$work/run.log" || { cat "$work/run.log"; fail "the message does not say that no space is left"; }
ls "$work/fs/run/checkpoints/"*.tmp > /dev/null 2>&1 && fail "a temporary file was left behind"
"$ckpt" verify "$work/fs/run" > /dev/null || fail "latest or the earlier checkpoints are not readable"
umount "$work/fs"
echo "disk full: all checks passed"
