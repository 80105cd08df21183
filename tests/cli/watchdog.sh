#!/usr/bin/env bash
# The collective watchdog (issue 14): a 2-rank run with runtime.collective_timeout = 3 whose
# second rank is stopped (SIGSTOP) must end on its own, quickly, non-zero, with rank 0 naming
# the call and the group it waited in; without the watchdog it would wait forever. The run
# directory says so too: an `error` event from the watchdog and a closing failed status line.
#   watchdog.sh MOERUN MPIEXEC WORKDIR
set -u
moerun=$1 mpiexec=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; [ -n "${victim:-}" ] && kill -CONT "$victim" 2>/dev/null; exit 1; }
"$mpiexec" -np 2 --oversubscribe "$moerun" --set parallel.ep=2 --set runtime.collective_timeout=3 --set train.steps=100000 \
  --set model.d_model=32 --set model.n_heads=2 --set model.d_ff=48 --set model.seq_len=32 --set model.n_layers=2 \
  --set train.global_batch=8 --set train.micro_batch=2 --set eval.every=0 --set log.progress=lines --run-dir "$work/run" \
  > "$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do [ "$(wc -l 2>/dev/null < "$work/run/metrics.jsonl" || echo 0)" -ge 3 ] && break; sleep 0.1; done
victim=$(pgrep -P "$pid" -f "$moerun" | tail -1)
[ -n "$victim" ] || fail "no rank process found"
start=$(date +%s)
kill -STOP "$victim"
for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
elapsed=$(( $(date +%s) - start ))
kill -CONT "$victim" 2>/dev/null
if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fail "the job still waits ${elapsed} s after a rank stopped"; fi
wait "$pid"
code=$?
[ "$code" -ne 0 ] || fail "the job ended with exit code 0"
grep -q "moerun watchdog: no progress for [0-9]* s in MPI_[A-Za-z]* on group" "$work/run.log" \
  || { cat "$work/run.log"; fail "no watchdog report naming the call and group"; }
grep -q '"event":"error".*"message":"moerun watchdog: no progress' "$work/run/events.jsonl" \
  || { cat "$work/run/events.jsonl"; fail "no error event in events.jsonl"; }
tail -1 "$work/run/metrics.jsonl" | grep -q '"status":"failed"' || fail "metrics.jsonl does not end with a failed status"
echo "watchdog: the job ended ${elapsed} s after a rank stopped (exit $code)"
