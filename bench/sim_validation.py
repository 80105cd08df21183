#!/usr/bin/env python3
"""moerun-sim against real runs on this machine: the table of docs/scaling.md ("Validation").

For each configuration below, runs moerun under mpirun (np 1 or 2, one compute thread per
rank, log.routing_trace = true), then moerun-sim with the hardware file calibrate wrote and
the run's own routing trace replayed, and compares the median step time over the same steps
(step 3 on: the first steps warm up allocators and primitive caches). Also checks that the
simulated token-exchange bytes equal the measured ones, step by step (--bytes-np 4 adds the
np 4 runs, oversubscribed here: bytes and messages only, no timing).

  bench/sim_validation.py [--hardware FILE] [--steps 16] [--repeats 1] [--out runs/sim_validation] [--only NAME ...]

Unless --hardware is given, the machine is calibrated again after the runs and every timed
configuration is predicted from that calibration too: how far the two predictions differ is
how far the host moved while it was measured (a shared host's rates change from minute to
minute), printed beside the errors so that a failed validation says whether the model or the
host missed.

--repeats N runs every timed configuration N times, round-robin (all configurations, then all
again), and judges the prediction against the quietest run (the smallest of the runs' median
step times): noise on a shared host only ever slows a run down, and the model predicts the
step without it. The median over the runs is reported beside it.

Prints the Markdown table and writes table.md, results.json and, when matplotlib is there,
validation.png to --out. Python standard library (matplotlib optional, /usr/bin/python3).
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASE = ["model.d_model=512", "model.d_ff=2048", "model.experts=8", "model.top_k=2", "model.seq_len=256",
        "model.n_layers=2", "model.n_heads=8", "train.global_batch=16", "train.micro_batch=8",
        "eval.every=0", "eval.examples=0", "eval.heldout_batches=0", "log.every=1000", "runtime.threads=1",
        "checkpoint.at_end=false",
        "log.routing_trace=true"]
DROPLESS = "model.capacity_factor=0"
# name: (ranks, settings beyond BASE)
CONFIGS = {
    "np1_fp32": (1, []),
    "np1_bf16": (1, ["train.precision=bf16"]),
    "np1_e16_dropless": (1, ["model.experts=16", DROPLESS]),
    "np2_dp2": (2, ["parallel.ep=1", DROPLESS]),
    "np2_ep2_uniform": (2, ["parallel.ep=2", DROPLESS]),
    "np2_ep2_zipf1.2": (2, ["parallel.ep=2", DROPLESS, "bench.router_zipf=1.2"]),
    "np2_ep2_zipf1.2_bf16": (2, ["parallel.ep=2", DROPLESS, "bench.router_zipf=1.2", "train.precision=bf16"]),
    "np2_ep2_capacity1.25": (2, ["parallel.ep=2", "model.capacity_factor=1.25", "bench.router_zipf=1.2"]),
    "np2_ep2_balanced": (2, ["parallel.ep=2", DROPLESS, "bench.router_balanced=true"]),
    "np2_ep2_e16_top4": (2, ["parallel.ep=2", DROPLESS, "model.experts=16", "model.top_k=4"]),
    "np2_ep2_top1_zipf0.8": (2, ["parallel.ep=2", DROPLESS, "model.top_k=1", "bench.router_zipf=0.8"]),
    "np2_ep2_auto_zipf1.2": (2, ["parallel.ep=2", DROPLESS, "bench.router_zipf=1.2", "balance.policy=auto",
                                 "balance.interval=4", "balance.window=3"]),
    "np2_ep2_swiglu_bf16": (2, ["parallel.ep=2", DROPLESS, "model.expert_type=swiglu", "train.precision=bf16"]),
}
BYTES_ONLY = {  # np 4: oversubscribed, exact traffic only
    "np4_ep4_zipf1.2": (4, ["parallel.ep=4", DROPLESS, "bench.router_zipf=1.2", "train.global_batch=32"]),
    "np4_ep4_two_nodes_hier": (4, ["parallel.ep=4", DROPLESS, "parallel.ranks_per_node=2", "parallel.all_to_all=hierarchical",
                             "train.global_batch=32"]),
}
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
           OMPI_MCA_btl_vader_single_copy_mechanism="none")


def sh(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=ENV, **kw)


def real_run(args, name, ranks, sets, steps, repeat=1):
    out = os.path.join(args.out, name, "run" if repeat == 1 else f"run-{repeat}")
    metrics = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(metrics):
        cmd = ["mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", "none" if ranks > 2 else "core",
               os.path.join(args.bin, "moerun"), "--run-dir", out]
        for s in BASE + sets + [f"train.steps={steps}"]:
            cmd += ["--set", s]
        if sh(cmd, stdout=subprocess.DEVNULL).returncode != 0:
            sys.exit(f"sim_validation: the real run {name} failed; see {out}")
    return [json.loads(l) for l in open(metrics) if '"step_ms"' in l]


def calibrate(args, path, ranks):
    r = sh(["mpirun", "-np", str(ranks), "--bind-to", "core", os.path.join(args.bin, "moerun-sim"), "calibrate",
            "--out", path, "--name", f"this machine, {ranks} rank(s) of 1 thread"])
    if r.returncode != 0:
        sys.exit("sim_validation: calibrate failed")


def sim_run(args, name, ranks, sets, steps, after=False):
    out = os.path.join(args.out, name, "sim-after" if after else "sim")
    hardware = (args.after_np1 if ranks == 1 else args.after) if after else \
        (args.hardware_np1 if ranks == 1 else args.hardware)
    cmd = [os.path.join(args.bin, "moerun-sim"), "run", "--hardware", hardware, "--world", str(ranks),
           "--routing", "trace:" + os.path.join(args.out, name, "run", "routing", "steps_1.h5"), "--steps", str(steps),
           "--out", out]
    if not any(s.startswith("parallel.ranks_per_node=") for s in sets):
        cmd += ["--ranks-per-node", str(ranks)]  # one node: this machine
    for s in BASE + sets + [f"train.steps={steps}"]:
        cmd += ["--set", s]
    if sh(cmd, stdout=subprocess.DEVNULL).returncode != 0:
        sys.exit(f"sim_validation: moerun-sim failed on {name}")
    return list(csv.DictReader(open(os.path.join(out, "steps.csv"))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hardware", help="hardware file for the np 2 runs (default: calibrate this machine with 2 ranks "
                    "into --out/this-machine.toml)")
    ap.add_argument("--hardware-np1", help="hardware file for the np 1 runs: a rank alone on the node computes faster "
                    "than one sharing it (default: calibrate with 1 rank into --out/this-machine-np1.toml)")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each timed configuration, round-robin; the "
                    "quietest is compared with the prediction (default 1)")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "sim_validation"))
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "release", "bin"))
    ap.add_argument("--only", nargs="*", help="configuration names to run (default: all)")
    ap.add_argument("--bytes-np", type=int, choices=[0, 4], default=4, help="also check traffic at np 4 (0: skip)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    # Kernel rates depend on how many ranks share the node: calibrate with the ranks each run has.
    drift_check = not args.hardware
    for attr, ranks in (("hardware", 2), ("hardware_np1", 1)):
        if getattr(args, attr):
            continue
        path = os.path.join(args.out, "this-machine.toml" if ranks == 2 else "this-machine-np1.toml")
        setattr(args, attr, path)
        if not os.path.exists(path):
            calibrate(args, path, ranks)
    configs = dict(CONFIGS)
    if args.bytes_np == 4:
        configs.update(BYTES_ONLY)
    names = args.only or list(configs)
    rows = []
    if args.repeats < 1:
        sys.exit("sim_validation: --repeats must be at least 1")
    for repeat in range(1, args.repeats + 1):  # every measurement first, round-robin
        for name in names:
            if repeat == 1 or configs[name][0] <= 2:  # np 4 runs count bytes only: once is enough
                real_run(args, name, *configs[name], args.steps, repeat)
    if drift_check:  # and the machine once more, right after them
        args.after = os.path.join(args.out, "this-machine-after.toml")
        args.after_np1 = os.path.join(args.out, "this-machine-np1-after.toml")
        for path, ranks in ((args.after, 2), (args.after_np1, 1)):
            if not os.path.exists(path):
                calibrate(args, path, ranks)
    for name in names:
        ranks, sets = configs[name]
        real = real_run(args, name, ranks, sets, args.steps)
        sim = sim_run(args, name, ranks, sets, args.steps)
        # The quietest of the repeats (each run's median step); their median beside it.
        runs = [real] + [real_run(args, name, ranks, sets, args.steps, k) for k in range(2, args.repeats + 1)
                         if ranks <= 2]
        run_medians = [statistics.median(s["step_ms"] for s in r if s["step"] >= 3) for r in runs]
        quietest = min(range(len(runs)), key=lambda k: run_medians[k])
        timed = [s for s in runs[quietest] if s["step"] >= 3]
        measured = run_medians[quietest]
        predicted = statistics.median(float(s["step_ms"]) for s in sim if int(s["step"]) >= 3)
        # Exchange traffic, step by step: rank 0's bytes, and the world's inter-node bytes and
        # messages (what metrics.jsonl reports).
        def traffic_real(s):
            w = s["comm"]["world"]
            return [s["a2a_bytes"], w["a2a_bytes_inter_node"], w["a2a_messages_intra_node"], w["a2a_messages_inter_node"]]

        def traffic_sim(s):
            return [float(s[k]) for k in ("a2a_bytes_rank0", "a2a_bytes_inter_node", "a2a_messages_intra_node",
                                          "a2a_messages_inter_node")]
        bytes_real = [traffic_real(s) for s in real]
        bytes_sim = [traffic_sim(s) for s in sim]
        spread = (max(s["step_ms"] for s in timed) - min(s["step_ms"] for s in timed)) / measured
        after = None
        if drift_check and ranks <= 2:
            after = statistics.median(float(s["step_ms"]) for s in sim_run(args, name, ranks, sets, args.steps, True)
                                      if int(s["step"]) >= 3)
        rows.append({"name": name, "ranks": ranks, "settings": " ".join(sets), "timed": ranks <= 2,
                     "measured_ms": measured, "predicted_ms": predicted, "error": (predicted - measured) / measured,
                     "run_medians_ms": run_medians, "median_of_runs_ms": statistics.median(run_medians),
                     "predicted_after_ms": after, "drift": None if after is None else (after - predicted) / predicted,
                     "spread": spread, "bytes_measured": bytes_real, "bytes_predicted": bytes_sim,
                     "bytes_exact": len(bytes_real) == len(bytes_sim) and all(
                         abs(a - b) < 0.5 for ra, rb in zip(bytes_real, bytes_sim) for a, b in zip(ra, rb))})
    timed = [r for r in rows if r["timed"]]
    repeated = args.repeats > 1  # then "measured" is the quietest run, and the runs' median is shown beside it
    lines = ["| configuration | ranks | measured ms |" + (f" median of {args.repeats} runs |" if repeated else "") +
             " predicted ms | error | measured spread | calibrated after | exchange bytes |",
             "|---|---:|---:|" + ("---:|" if repeated else "") + "---:|---:|---:|---:|---|"]
    for r in rows:
        err = f"{100 * r['error']:+.1f}%" if r["timed"] else "(not timed: oversubscribed)"
        after = f"{r['predicted_after_ms']:.0f} ({100 * r['drift']:+.1f}%)" if r["drift"] is not None else "-"
        median_of_runs = (f" {r['median_of_runs_ms']:.0f} ({100 * (r['predicted_ms'] / r['median_of_runs_ms'] - 1):+.1f}%) |"
                          if repeated and r["timed"] else " - |" if repeated else "")
        lines.append(f"| {r['name']} | {r['ranks']} | {r['measured_ms']:.0f} |{median_of_runs} {r['predicted_ms']:.0f} | "
                     f"{err} | {100 * r['spread']:.0f}% | {after} | "
                     f"{'equal every step' if r['bytes_exact'] else 'DIFFER'} |")
    errors = sorted(abs(r["error"]) for r in timed)
    summary = (f"{len(timed)} timed configurations{f' (each the quietest of {args.repeats} runs)' if repeated else ''}: "
               f"median |error| {100 * statistics.median(errors):.1f}%, "
               f"largest {100 * errors[-1]:.1f}%; exchange bytes equal on {sum(r['bytes_exact'] for r in rows)} "
               f"of {len(rows)}")
    if repeated:
        against_median = sorted(abs(r["predicted_ms"] / r["median_of_runs_ms"] - 1) for r in timed)
        summary += (f"\nagainst the median of the runs instead: median |error| {100 * statistics.median(against_median):.1f}%, "
                    f"largest {100 * against_median[-1]:.1f}%")
    drifts = sorted(r["drift"] for r in timed if r["drift"] is not None)
    if drifts:
        summary += (f"\nhost drift: a calibration after the runs predicts them {100 * statistics.median(drifts):+.1f}% "
                    f"(median; {100 * drifts[0]:+.1f}% to {100 * drifts[-1]:+.1f}%) from the one before"
                    + (": over 5%, the host moved while it was measured; the errors are not the model's alone"
                       if max(abs(d) for d in drifts) > 0.05 else ""))
    table = "\n".join(lines) + "\n\n" + summary + "\n"
    print(table)
    open(os.path.join(args.out, "table.md"), "w").write(table)
    json.dump(rows, open(os.path.join(args.out, "results.json"), "w"), indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("sim_validation: no matplotlib in this interpreter (use /usr/bin/python3): no figure")
        return
    fig, ax = plt.subplots(figsize=(6.5, 5))
    top = max(max(r["measured_ms"], r["predicted_ms"]) for r in timed) * 1.1
    ax.plot([0, top], [0, top], color="0.6", lw=1, label="prediction = measurement")
    ax.fill_between([0, top], [0, 0.85 * top], [0, 1.15 * top], color="0.9", label="within 15%")
    for r in timed:
        ax.plot(r["measured_ms"], r["predicted_ms"], "o", color="C0" if r["ranks"] == 1 else "C1")
    ax.plot([], [], "o", color="C0", label="np 1")
    ax.plot([], [], "o", color="C1", label="np 2")
    ax.set_xlabel("measured step time (ms, median)")
    ax.set_ylabel("moerun-sim prediction (ms)")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_title("moerun-sim against real runs on this machine")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "validation.png"), dpi=100)
    print("wrote", os.path.join(args.out, "validation.png"))


if __name__ == "__main__":
    main()
