#!/usr/bin/env bash
# The cluster path under stress: a 2-rank expert-parallel run whose second rank is stalled
# (SIGSTOP), resumed (SIGCONT), and then the job gets SIGUSR1 through mpirun (Slurm's warning
# before the time limit). Every try must end with exit code 0, the signal-checkpoint message
# and a checkpoint that verifies. CTest runs a short loop; for the long one:
#   signal_stress.sh MOERUN MOERUN_CKPT MPIEXEC WORKDIR [TRIES=3] [STALL_SECONDS=2]
set -u
moerun=$1 ckpt=$2 mpiexec=$3 work=$4 tries=${5:-3} stall=${6:-2}
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
wait_for_steps() {  # until the run has logged $2 steps (up to 60 s)
  for _ in $(seq 1 600); do [ "$(wc -l 2>/dev/null < "$1/metrics.jsonl" || echo 0)" -ge "$2" ] && return 0; sleep 0.1; done
  return 1
}
for i in $(seq 1 "$tries"); do
  dir="$work/try_$i"
  "$mpiexec" -np 2 --oversubscribe "$moerun" --set parallel.ep=2 --set train.steps=100000 --set eval.every=0 \
    --set log.progress=lines --run-dir "$dir" > "$dir.log" 2>&1 &
  pid=$!
  wait_for_steps "$dir" 3 || { cat "$dir.log"; fail "try $i: the run did not start"; }
  ranks=$(pgrep -P "$pid" -f "$moerun" | tr '\n' ' ')
  victim=$(echo "$ranks" | awk '{print $NF}')
  [ -n "$victim" ] || fail "try $i: no rank process found under mpirun $pid"
  kill -STOP "$victim"
  sleep "$stall"
  kill -CONT "$victim"
  sleep 0.$((RANDOM % 10))
  kill -USR1 "$pid"
  wait "$pid"
  code=$?
  [ "$code" -eq 0 ] || { tail -n 30 "$dir.log"; fail "try $i: exit code $code, expected 0"; }
  grep -q "signal received: checkpoint written" "$dir.log" || { tail -n 30 "$dir.log"; fail "try $i: no checkpoint message"; }
  "$ckpt" verify "$dir" > /dev/null || fail "try $i: the checkpoint does not verify"
  echo "try $i: ok (stalled rank $victim for ${stall} s, then SIGUSR1)"
done
echo "signal stress: $tries tries passed"
