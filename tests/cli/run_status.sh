#!/usr/bin/env bash
# A run's end is in its files (issue 19): a completed run closes metrics.jsonl with
# "status": "completed"; a run stopped by the NaN guard (an injected failure: a learning rate
# of 1e30) writes an `error` event (rank, step, message) to events.jsonl and closes metrics.jsonl
# with "status": "failed", on one rank and on each rank of two; every line carries a "time";
# token ids of unknown text are evaluated in perplexity.
#   run_status.sh MOERUN MPIEXEC WORKDIR
set -u
moerun=$1 mpiexec=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
small=(--set model.d_model=32 --set model.n_heads=2 --set model.d_ff=48 --set model.seq_len=32 --set model.n_layers=2
       --set train.global_batch=8 --set train.micro_batch=2 --set eval.every=0 --set eval.examples=0
       --set eval.heldout_batches=1 --set log.progress=lines)
"$moerun" "${small[@]}" --set train.steps=3 --run-dir "$work/ok" > "$work/ok.log" 2>&1 || { cat "$work/ok.log"; fail "run failed"; }
tail -1 "$work/ok/metrics.jsonl" | grep -q '"status":"completed"' || fail "a completed run does not say so"
grep -vq '"time":' "$work/ok/metrics.jsonl" && fail "a metrics line has no time"
bad=(--set train.steps=10 --set train.lr=1e30 --set train.warmup_steps=0 --set train.grad_clip=0)
"$moerun" "${small[@]}" "${bad[@]}" --run-dir "$work/nan" > "$work/nan.log" 2>&1 && fail "the NaN run exited 0"
grep -q '"event":"error".*"message":"\[nan guard\] step 2.*"rank":0,"step":2' "$work/nan/events.jsonl" \
  || { cat "$work/nan/events.jsonl"; fail "no error event naming the step"; }
tail -1 "$work/nan/metrics.jsonl" | grep -q '"status":"failed"' || fail "metrics.jsonl does not end with a failed status"
# Resuming the completed run drops its closing line; the resumed run writes its own.
"$moerun" --resume "$work/ok" --set train.steps=4 > "$work/resume.log" 2>&1 || { cat "$work/resume.log"; fail "resume failed"; }
[ "$(grep -c '"status":' "$work/ok/metrics.jsonl")" -eq 1 ] || fail "a resumed run keeps the old status line"
tail -1 "$work/ok/metrics.jsonl" | grep -q '"status":"completed"' || fail "the resumed run does not close with its status"
"$mpiexec" -np 2 --oversubscribe "$moerun" "${small[@]}" "${bad[@]}" --set parallel.ep=2 --run-dir "$work/nan2" \
  > "$work/nan2.log" 2>&1 && fail "the 2-rank NaN run exited 0"
[ "$(grep -c '"event":"error"' "$work/nan2/events.jsonl")" -ge 1 ] || { cat "$work/nan2/events.jsonl"; fail "2 ranks: no error event"; }
tail -1 "$work/nan2/metrics.jsonl" | grep -q '"status":"failed"' || fail "2 ranks: no failed status"
# Token ids without a sidecar (unknown text): the evaluation reports perplexity.
python3 -c "import struct, random; random.seed(1); open('$work/ids.u16', 'wb').write(struct.pack('<6000H', *[random.randrange(300) for _ in range(6000)]))"
"$moerun" "${small[@]}" --set train.steps=1 --set data.source="$work/ids.u16" --set model.vocab_size=300 --run-dir "$work/ppl" \
  > "$work/ppl.log" 2>&1 || { cat "$work/ppl.log"; fail "training on token ids failed"; }
grep -q '"eval":true.*"heldout_ppl"' "$work/ppl/metrics.jsonl" && grep -q "perplexity" "$work/ppl.log" \
  || { cat "$work/ppl.log"; fail "no perplexity for token ids"; }
echo "run_status: OK"
