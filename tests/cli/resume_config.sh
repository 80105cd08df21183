#!/usr/bin/env bash
# Resume restores the run (issue 14): the checkpoint's config is the starting point (no shape
# given again, no training key back to its default); a changed safe key is printed and
# recorded in events.jsonl; a changed shape key (layers, top_k) is refused naming both values;
# moerun-ckpt config writes TOML that moerun --config reads; metrics.jsonl holds each step once
# after a resume, and an evaluation after resuming past the end carries the checkpoint's step.
#   resume_config.sh MOERUN MOERUN_CKPT WORKDIR
set -u
moerun=$1 ckpt=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
"$moerun" --set model.d_model=32 --set model.n_heads=2 --set model.d_ff=48 --set model.seq_len=32 --set model.n_layers=2 \
  --set train.global_batch=8 --set train.micro_batch=2 --set eval.every=0 --set eval.examples=0 --set eval.heldout_batches=1 \
  --set train.grad_clip=0 --set train.warmup_steps=0 --set train.steps=4 --set log.progress=lines --run-dir "$work/r" \
  > "$work/first.log" 2>&1 || { cat "$work/first.log"; fail "first run failed"; }
"$moerun" --set train.steps=6 --set train.lr=0.001 --resume "$work/r" > "$work/resume.log" 2>&1 \
  || { cat "$work/resume.log"; fail "resume with only training keys failed (shapes must come from the checkpoint)"; }
grep -q "changed: train.steps: 4 -> 6; train.lr: 0.003 -> 0.001" "$work/resume.log" || fail "the changes are not printed"
grep -q '"event":"resume"' "$work/r/events.jsonl" && grep -q '"train.lr: 0.003 -> 0.001"' "$work/r/events.jsonl" \
  || fail "the resume and its changes are not in events.jsonl"
grep -q '"grad_clip": 0.0' "$work/r/config.json" && grep -q '"warmup_steps": 0' "$work/r/config.json" \
  || fail "training keys went back to their defaults"
for bad in "model.n_layers=3:model.n_layers = 2 in the checkpoint but 3" "model.top_k=1:model.top_k = 2 in the checkpoint but 1"; do
  "$moerun" --set train.steps=8 --set "${bad%%:*}" --resume "$work/r" > "$work/bad.log" 2>&1 && fail "${bad%%:*} was accepted on resume"
  grep -q "${bad#*:}" "$work/bad.log" || { cat "$work/bad.log"; fail "the refusal of ${bad%%:*} does not name both values"; }
done
"$ckpt" verify "$work/r" > /dev/null || fail "a refused resume damaged the checkpoints"
"$ckpt" config "$work/r" > "$work/run.toml" || fail "moerun-ckpt config failed"
"$ckpt" info "$work/r" | grep -q "model.n_layers = 2" || fail "moerun-ckpt info does not print the config"
"$moerun" --config "$work/run.toml" --set train.steps=2 --run-dir "$work/again" > "$work/again.log" 2>&1 \
  || { cat "$work/again.log"; fail "moerun --config did not read moerun-ckpt config's TOML"; }
grep -q "(2 layers, 4 experts, top-2)" "$work/again.log" || fail "the TOML did not carry the model's shape"
"$moerun" --config "$work/r/config.json" --set train.steps=2 --run-dir "$work/again_json" > "$work/again_json.log" 2>&1 \
  || { cat "$work/again_json.log"; fail "moerun --config did not read a run directory's config.json"; }
grep -q "(2 layers, 4 experts, top-2)" "$work/again_json.log" || fail "config.json did not carry the model's shape"
# History: resuming from step 2 of a run that reached step 4 sets the old lines 3-4 and the
# summary aside; every step appears once, and the resume is an event.
rm -rf "$work/h"
"$moerun" --config "$work/run.toml" --set train.steps=4 --set checkpoint.every=2 --set checkpoint.keep=5 --run-dir "$work/h" \
  > "$work/h1.log" 2>&1 || fail "history run failed"
"$moerun" --set train.steps=5 --resume "$work/h/checkpoints/step_00000002.h5" > "$work/h2.log" 2>&1 \
  || { cat "$work/h2.log"; fail "resume from step 2 failed"; }
steps=$(grep -v '"eval"' "$work/h/metrics.jsonl" | grep -o '"step":[0-9]*' | cut -d: -f2 | tr '\n' ' ')
[ "$steps" = "1 2 3 4 5 " ] || fail "metrics.jsonl after the resume holds steps '$steps', expected '1 2 3 4 5 '"
[ -f "$work/h/metrics.before-resume-2.jsonl" ] || fail "the superseded lines were not kept aside"
grep -q '"superseded_metrics_lines":' "$work/h/events.jsonl" || fail "no resume event with the superseded lines"
# Resumed past the end: the evaluation is logged under the checkpoint's step.
"$moerun" --set train.steps=3 --resume "$work/h/checkpoints/step_00000005.h5" > "$work/h3.log" 2>&1 || fail "resume past the end failed"
grep -q "eval step 5:" "$work/h3.log" || { cat "$work/h3.log"; fail "the evaluation after resuming past the end is not at step 5"; }
echo "resume config: all checks passed"
