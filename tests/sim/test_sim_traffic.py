#!/usr/bin/env python3
"""moerun-sim's token-exchange traffic equals what moerun measures, step by step, exactly.

Runs moerun under mpirun (np 2 flat; np 4 flat and through node leaders with two "nodes" of
two ranks; oversubscribed here, so traffic only, no timing) with log.routing_trace = true,
replays each run's trace in moerun-sim, and compares per step: rank 0's bytes sent, and the
world's inter-node bytes and intra- and inter-node message counts (metrics.jsonl), with one
micro-batch per rank and step (the trace holds step totals). Then
checks calibrate on the real kernels (--quick) and that moerun-sim refuses a world that does
not fit the layout and a trace of another depth, naming them. Standard library only.

  test_sim_traffic.py MPIEXEC MOERUN MOERUN_SIM WORKDIR
"""
import csv
import json
import os
import shutil
import subprocess
import sys

mpiexec, moerun, sim, work = sys.argv[1:5]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
TINY = ["model.d_model=32", "model.d_ff=64", "model.experts=8", "model.top_k=2", "model.seq_len=16", "model.n_layers=2",
        "model.n_heads=2", "train.micro_batch=4", "train.steps=4", "model.capacity_factor=0",
        "bench.router_zipf=1.2", "eval.every=0", "eval.examples=0", "eval.heldout_batches=0", "log.routing_trace=true",
        "runtime.threads=1"]
CASES = {
    "np2_flat": (2, ["parallel.ep=2"], 0),
    "np4_flat_two_nodes": (4, ["parallel.ep=4", "parallel.ranks_per_node=2", "parallel.all_to_all=flat"], 2),
    "np4_leaders_two_nodes": (4, ["parallel.ep=4", "parallel.ranks_per_node=2", "parallel.all_to_all=hierarchical"], 2),
    "np4_ep2_dp2": (4, ["parallel.ep=2", "balance.policy=replicate", "balance.interval=2", "balance.force=true"], 0),
}


def sets(values):
    out = []
    for v in values:
        out += ["--set", v]
    return out


def run(cmd, expect_ok=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if expect_ok and r.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


failures = []
hw = os.path.join(work, "hw.toml")
run([mpiexec, "-np", "2", "--oversubscribe", sim, "calibrate", "--quick", "--out", hw])
text = open(hw).read()
for field in ("[compute.gemm.bf16]", "[links.intra_node.all_to_all]", "allreduce_hidden", 'source = "measured"'):
    if field not in text:
        failures.append(f"calibrate wrote no {field}")

for name, (ranks, extra, per_node) in CASES.items():
    out = os.path.join(work, name)
    # One micro-batch per rank and step: the trace holds step totals, and a pair of ranks that
    # exchanged rows in the step then did so in each exchange (message counts stay exact).
    extra = extra + [f"train.global_batch={4 * ranks}"]
    run([mpiexec, "-np", str(ranks), "--oversubscribe", moerun, "--run-dir", out] + sets(TINY + extra))
    real = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"step_ms"' in l]
    cmd = [sim, "run", "--hardware", hw, "--world", str(ranks), "--steps", str(len(real)), "--out", os.path.join(out, "sim"),
           "--routing", "trace:" + os.path.join(out, "routing", "steps_1.h5")] + sets(TINY + extra)
    if per_node:
        cmd += ["--ranks-per-node", str(per_node)]
    run(cmd)
    predicted = list(csv.DictReader(open(os.path.join(out, "sim", "steps.csv"))))
    if "balance.force=true" in extra:
        # The simulator's planner decides from simulated costs, so after the first decision its
        # placement may differ from the run's: compare the steps before it.
        real, predicted = real[:2], predicted[:2]
    for m, p in zip(real, predicted):
        w = m["comm"]["world"]
        pairs = [("rank 0 bytes", m["a2a_bytes"], p["a2a_bytes_rank0"]),
                 ("world inter-node bytes", w["a2a_bytes_inter_node"], p["a2a_bytes_inter_node"]),
                 ("world intra-node messages", w["a2a_messages_intra_node"], p["a2a_messages_intra_node"]),
                 ("world inter-node messages", w["a2a_messages_inter_node"], p["a2a_messages_inter_node"])]
        for what, a, b in pairs:
            if abs(float(a) - float(b)) > 0.5:
                failures.append(f"{name} step {m['step']}: {what}: moerun {a}, moerun-sim {b}")
    print(f"{name}: {len(real)} steps compared")

bad = run([sim, "run", "--hardware", hw, "--world", "3"] + sets(["parallel.ep=2"]), expect_ok=False)
if bad.returncode == 0 or "parallel.ep = 2 does not divide the world size 3" not in bad.stderr:
    failures.append(f"a world of 3 with ep 2 was not refused clearly: {bad.stderr.strip()}")
trace = os.path.join(work, "np2_flat", "routing", "steps_1.h5")
bad = run([sim, "run", "--hardware", hw, "--world", "2", "--routing", "trace:" + trace] +
          sets(TINY + ["parallel.ep=2", "model.n_layers=3"]), expect_ok=False)
if bad.returncode == 0 or "has 2 MoE layers but the config has 3" not in bad.stderr or trace not in bad.stderr:
    failures.append(f"a trace of another depth was not refused with its name: {bad.stderr.strip()}")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("moerun-sim traffic equals moerun's on every compared step")
