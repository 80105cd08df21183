#!/usr/bin/env python3
"""Adaptive expert parallelism study: for each router skew (bench.router_zipf) and each
balance.policy, run moerun under mpirun on the medium config and report tokens/s, imbalance
before and after rebalancing, bytes migrated, and the planner's prediction error.
Python standard library only.

  bench/balance_study.py [--np 2] [--steps 40] [--interval 10] [--zipf 0 0.8 1.2 1.6] [--capacity 0]
                         [--set KEY=VALUE ...] [--policies none migrate replicate auto] [--reps 1]
                         [--out runs/balance_study]

--reps N runs every point N times, round-robin (all points once, then again), so that a slow
spell of a shared machine falls on every policy alike; the table gives the median tokens/s and
the range, the other columns from the median run. A second table compares the passes alone
(metrics.jsonl passes_ms: the step up to the end of its gradient sync, what a placement
changes): on a shared host the update after them, memory-bound, can run 3x slower on one rank
for a whole run, whatever the policy.

A policy may carry its own settings after a colon, comma-separated, as a variant beside the
plain policy: "auto:balance.max_experts_per_rank=8" runs auto with room for every expert on
every rank.

Policy "ep1" is a reference, not a policy: parallel.ep = 1, every rank holds every expert and
processes its own tokens' copies, so no rank waits for another's experts. Its tokens/s bound
what any placement can gain at ep = --np (it pays an expert-gradient all-reduce instead of the
token exchange).

Policy "balanced" is the honest bound at ep = --np: bench.router_balanced = true forces every
expert to get the same copies from every rank (policy none; the skew setting is ignored), so
its tokens/s are what a perfect placement could reach. The table reports each policy's gain as
a fraction of the bound's, (tokens/s - none) / (balanced - none), and tokens/s / balanced.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MEDIUM = ["model.d_model=512", "model.d_ff=2048", "model.experts=8", "model.top_k=2", "model.seq_len=256",
          "model.n_layers=4", "model.n_heads=8", "train.global_batch=16", "train.micro_batch=8",
          "eval.every=0", "eval.examples=0", "eval.heldout_batches=0", "log.every=1000",
          "checkpoint.at_end=false"]


def run(args, zipf, policy, rep=0):
    out = os.path.join(args.out, f"zipf{zipf}_{policy.replace(':', '_').replace(',', '_')}" + (f"_r{rep}" if args.reps > 1 else ""))
    if not os.path.exists(os.path.join(out, "metrics.jsonl")):
        name, _, variant = policy.partition(":")  # e.g. auto:balance.max_experts_per_rank=8
        ep = 1 if name == "ep1" else args.np
        reference = name in ("ep1", "balanced")
        sets = MEDIUM + [f"train.steps={args.steps}", f"parallel.ep={ep}",
                         f"balance.policy={'none' if reference else name}",
                         f"balance.interval={args.interval}", "balance.window=5",
                         "bench.router_balanced=true" if name == "balanced" else f"bench.router_zipf={zipf}",
                         f"model.capacity_factor={args.capacity}"] + args.set + [v for v in variant.split(",") if v]
        cmd = ["mpirun", "-np", str(args.np), "--bind-to", "core", args.moerun, "--run-dir", out]
        for s in sets:
            cmd += ["--set", s]
        print("+", " ".join(cmd), flush=True)
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_btl_vader_single_copy_mechanism="none")
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    records = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    steps = [r for r in records if "step_ms" in r]
    events_path = os.path.join(out, "events.jsonl")
    events = [json.loads(l) for l in open(events_path)] if os.path.exists(events_path) else []
    applied = [e for e in events if e.get("event") == "rebalance" and e.get("applied")]
    measured = [e for e in events if e.get("event") == "rebalance_measured"]
    first = applied[0]["step"] if applied else args.interval
    before = [s for s in steps if 2 <= s["step"] <= args.interval]
    after = [s for s in steps if s["step"] > first + 1]
    tail = [s for s in steps if s["step"] > args.steps // 2]  # throughput after settling
    return {
        "zipf": zipf, "policy": policy,
        "tokens_per_s": statistics.median(s["tokens_per_s"] for s in tail),
        # The step up to the end of its gradient sync: what a placement changes (absent in runs
        # from before it was logged).
        "passes_ms": statistics.median(s["passes_ms"] for s in tail) if all("passes_ms" in s for s in tail) else None,
        "imbalance_before": statistics.mean(s["imbalance"] for s in before),
        "imbalance_after": statistics.mean(s["imbalance"] for s in (after or before)),
        "expert_time_imb_after": statistics.mean(s["expert_time_imbalance"] for s in (after or before)),
        "rebalances": len(applied),
        "bytes_moved": sum(e["bytes_moved"] for e in applied),
        "prediction_error": statistics.median(abs(e["prediction_error"]) for e in measured) if measured else None,
        "peak_device_bytes": next((r.get("peak_device_bytes", 0) for r in reversed(records) if r.get("summary")), 0),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--interval", type=int, default=10)
    ap.add_argument("--zipf", type=float, nargs="+", default=[0.0, 0.8, 1.2, 1.6])
    ap.add_argument("--policies", nargs="+", default=["none", "migrate", "replicate", "auto"])
    ap.add_argument("--capacity", type=float, default=0.0, help="model.capacity_factor (0 = dropless: experts do all their work)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="one more moerun setting for every run (repeatable), e.g. log.routing_trace=true")
    ap.add_argument("--reps", type=int, default=1, help="runs per point, round-robin; the table gives medians")
    ap.add_argument("--moerun", default=os.path.join(ROOT, "build", "release", "bin", "moerun"))
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "balance_study"))
    args = ap.parse_args()
    runs = [[run(args, z, p, rep) for z in args.zipf for p in args.policies] for rep in range(args.reps)]
    rows = []
    for point in zip(*runs):  # one point's runs: the median run's row, with every run's tokens/s
        ordered = sorted(point, key=lambda r: r["tokens_per_s"])
        row = dict(ordered[(len(ordered) - 1) // 2])
        row["tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in point)
        row["runs_tokens_per_s"] = [r["tokens_per_s"] for r in point]
        passes = [r["passes_ms"] for r in point if r.get("passes_ms") is not None]
        row["passes_ms"] = statistics.median(passes) if len(passes) == len(point) else None
        row["runs_passes_ms"] = passes
        rows.append(row)
    base = {r["zipf"]: r["tokens_per_s"] for r in rows if r["policy"] == "none"}
    bound = {r["zipf"]: r["tokens_per_s"] for r in rows if r["policy"] == "balanced"}
    print(f"\n| zipf | policy | tokens/s | range | vs none | vs balanced | share of the bound's gain | imbalance before | "
          f"after | expert-time imbalance after | rebalances | MB moved | prediction error | peak device GiB/rank |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        z = r["zipf"]
        rel = r["tokens_per_s"] / base[z] if z in base else float("nan")
        vs_bound = f"{r['tokens_per_s'] / bound[z]:.2f}" if z in bound else "-"
        gap = bound.get(z, 0.0) - base.get(z, 0.0)
        share = f"{(r['tokens_per_s'] - base[z]) / gap:.0%}" if z in bound and z in base and gap > 0 else "-"
        err = f"{100 * r['prediction_error']:.0f}%" if r["prediction_error"] is not None else "-"
        spread = f"{min(r['runs_tokens_per_s']):.0f}-{max(r['runs_tokens_per_s']):.0f}" if len(r["runs_tokens_per_s"]) > 1 else "-"
        print(f"| {z} | {r['policy']} | {r['tokens_per_s']:.0f} | {spread} | {rel:.2f}x | {vs_bound} | {share} | "
              f"{r['imbalance_before']:.2f} | {r['imbalance_after']:.2f} | {r['expert_time_imb_after']:.2f} | "
              f"{r['rebalances']} | {r['bytes_moved'] / 1e6:.1f} | {err} | {r.get('peak_device_bytes', 0) / 2**30:.2f} |")
    # The same comparison on the passes alone: the update after them runs as long whatever the
    # placement, and on a shared host its memory-bound phases slow one rank for whole runs.
    if all(r["passes_ms"] is not None for r in rows):
        base_p = {r["zipf"]: r["passes_ms"] for r in rows if r["policy"] == "none"}
        bound_p = {r["zipf"]: r["passes_ms"] for r in rows if r["policy"] == "balanced"}
        print("\nPasses (the step up to the end of its gradient sync), ms, median over the second half's steps:\n")
        print("| zipf | policy | passes ms | range | none / policy | share of the bound's gain |")
        print("|---:|---|---:|---:|---:|---:|")
        for r in rows:
            z = r["zipf"]
            rel = f"{base_p[z] / r['passes_ms']:.2f}x" if z in base_p else "-"
            gap = base_p.get(z, 0.0) - bound_p.get(z, 0.0)
            share = f"{(base_p[z] - r['passes_ms']) / gap:.0%}" if z in bound_p and z in base_p and gap > 0 else "-"
            spread = f"{min(r['runs_passes_ms']):.0f}-{max(r['runs_passes_ms']):.0f}" if len(r["runs_passes_ms"]) > 1 else "-"
            print(f"| {z} | {r['policy']} | {r['passes_ms']:.0f} | {spread} | {rel} | {share} |")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
