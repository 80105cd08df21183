#!/usr/bin/env bash
# The planner's decisions in a real run are the simulator's for the same inputs (issue 17): a
# 2-rank run with adaptive placement logs each decision's whole planner input
# (log.planner_inputs), `moerun-sim replay` asks the planner again, and every decision (policy
# chosen, applied, new placements, predicted step times) must be identical, for auto and eplb.
# A changed logged prediction is reported as different (exit 1), and a run without the
# inputs gets an error that names the key to set.
#   replay.sh MPIEXEC MOERUN MOERUN_SIM WORKDIR
set -u
mpiexec=$1 moerun=$2 sim=$3 work=$4
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
train() {  # train RUN_DIR POLICY LOG_INPUTS
  "$mpiexec" -n 2 "$moerun" --set model.d_model=32 --set model.n_heads=2 --set model.d_ff=48 --set model.seq_len=32 \
    --set model.n_layers=2 --set model.experts=8 --set parallel.ep=2 --set bench.router_zipf=1.2 \
    --set train.global_batch=8 --set train.micro_batch=2 --set train.steps=7 --set eval.every=0 --set eval.examples=0 \
    --set eval.heldout_batches=0 --set checkpoint.every=0 --set log.progress=lines --set balance.policy="$2" \
    --set balance.interval=2 --set balance.threshold=0 --set balance.min_gain=0 --set log.planner_inputs="$3" --run-dir "$1" > "$1.log" 2>&1 \
    || { cat "$1.log"; fail "training ($2) failed"; }
}
for policy in auto eplb; do
  train "$work/$policy" "$policy" true
  "$sim" replay "$work/$policy" > "$work/$policy.replay" 2>&1 || { cat "$work/$policy.replay"; fail "$policy: a replayed decision differs"; }
  grep -q "3 of 3 decisions identical" "$work/$policy.replay" || { cat "$work/$policy.replay"; fail "$policy: expected 3 decisions"; }
done
grep -q '"applied":true' "$work/auto/events.jsonl" || fail "no decision applied a placement: the replay would check little"
# A changed logged prediction is caught.
sed 's/"predicted_step_ms_after":\([0-9.e+-]*\)/"predicted_step_ms_after":1\1/' "$work/auto/events.jsonl" > "$work/tampered.jsonl"
"$sim" replay "$work/tampered.jsonl" > "$work/tampered.replay" 2>&1 && fail "a changed prediction replayed as identical"
grep -q "DIFFERS" "$work/tampered.replay" || { cat "$work/tampered.replay"; fail "no DIFFERS line"; }
# Without the inputs: an error naming the key.
train "$work/plain" auto false
"$sim" replay "$work/plain" > "$work/plain.replay" 2>&1 && fail "replay of a run without inputs succeeded"
grep -q "log.planner_inputs=true" "$work/plain.replay" || { cat "$work/plain.replay"; fail "the error does not name the key"; }
echo "replay: decisions identical for auto and eplb; a changed prediction and a run without inputs are reported"
