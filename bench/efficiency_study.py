#!/usr/bin/env python3
"""Memory and communication savings of issue 8, measured by running moerun (through
launch/moerun-local.sh) and reading each run's metrics.jsonl. Python standard library only.

  recompute  train.recompute = none | moe | full at 2 ranks (ep 2): peak device bytes, the
             planner's activation estimate, tokens/s (the price of recomputing)
  zero       train.shard_optimizer = false | true at 2 and 4 ranks: optimizer state bytes and
             peak device bytes per rank (the 4-rank runs oversubscribe this machine: memory only)
  comm       parallel.all_to_all = flat | hierarchical at 4 ranks, ep 4, ranks_per_node 2 (two
             "nodes"): inter-node messages and bytes per step, summed over ranks

  bench/efficiency_study.py [--study recompute zero comm] [--config default medium] [--out runs/efficiency]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FOUR_RANKS = {"default": "train.micro_batch=8", "medium": "train.micro_batch=4"}
QUIET = ["eval.every=0", "eval.examples=0", "eval.heldout_batches=0", "log.every=1000", "runtime.threads=1",
         "checkpoint.at_end=false"]
CONFIGS = {
    "default": [],
    "medium": ["model.d_model=512", "model.d_ff=2048", "model.experts=8", "model.top_k=2", "model.seq_len=256",
               "model.n_layers=4", "model.n_heads=8", "train.global_batch=16", "train.micro_batch=8"],
}


def run(args, name, ranks, sets):
    out = os.path.join(args.out, name)
    metrics = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(metrics):
        cmd = ["bash", os.path.join(ROOT, "launch", "moerun-local.sh"), "-n", str(ranks)]
        if ranks > os.cpu_count():
            cmd.append("--oversubscribe")
        cmd += ["--", "--run-dir", out]
        if ranks == 4:  # every rank needs whole micro-batches of the global batch
            sets = sets + [FOUR_RANKS[name.split("_")[1]]]
        for s in QUIET + sets:
            cmd += ["--set", s]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    lines = [json.loads(l) for l in open(metrics)]
    steps = [l for l in lines if "step_ms" in l]
    summary = next(l for l in lines if l.get("summary"))
    return steps, summary


def mib(b):
    return b / 2**20


def recompute(args):
    print("\n| config | recompute | peak device MiB | vs none | activations + temporaries, estimated MiB | "
          "tokens/s | time vs none |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for config in args.config:
        base = None
        for mode in ["none", "moe", "full"]:
            steps, summary = run(args, f"recompute_{config}_{mode}", 2, CONFIGS[config] + [
                f"train.steps={args.steps}", "parallel.ep=2", f"train.recompute={mode}"])
            tps = statistics.median(s["tokens_per_s"] for s in steps[2:])
            peak = summary["peak_device_bytes"]
            est = summary["memory_estimate"]["activations_and_temporaries_by_recompute"][mode]
            base = base or (peak, tps)
            print(f"| {config} | {mode} | {mib(peak):.1f} | {peak / base[0]:.2f}x | {mib(est):.1f} | {tps:.0f} | "
                  f"{base[1] / tps:.2f}x |")


def zero(args):
    print("\n| config | ranks | ep | shard_optimizer | optimizer state MiB per rank | peak device MiB per rank | "
          "estimated optimizer MiB | tokens/s |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for config in args.config:
        for ranks, ep in [(2, 1), (2, 2), (4, 2), (4, 4)]:
            for shard in ["false", "true"]:
                steps, summary = run(args, f"zero_{config}_np{ranks}_ep{ep}_{shard}", ranks, CONFIGS[config] + [
                    f"train.steps={args.steps}", f"parallel.ep={ep}", f"train.shard_optimizer={shard}"])
                tps = statistics.median(s["tokens_per_s"] for s in steps[2:])
                timing = f"{tps:.0f}" if ranks <= os.cpu_count() else "(oversubscribed)"
                print(f"| {config} | {ranks} | {ep} | {shard} | {mib(summary['optimizer_state_bytes']):.2f} | "
                      f"{mib(summary['peak_device_bytes']):.1f} | {mib(summary['memory_estimate']['optimizer']):.2f} | {timing} |")


def comm(args):
    print("\n| config | ranks per node | all_to_all | inter-node messages per step | inter-node MB per step | "
          "intra-node messages per step |")
    print("|---|---:|---|---:|---:|---:|")
    for config in args.config:
        for rpn in [1, 2]:
            for mode in ["flat", "hierarchical"]:
                steps, _ = run(args, f"comm_{config}_rpn{rpn}_{mode}", 4, CONFIGS[config] + [
                    f"train.steps={min(args.steps, 6)}", "parallel.ep=4", f"parallel.ranks_per_node={rpn}",
                    f"parallel.all_to_all={mode}"])
                w = [s["comm"]["world"] for s in steps]
                med = lambda k: statistics.median(x[k] for x in w)
                print(f"| {config} | {rpn} | {mode} | {med('a2a_messages_inter_node'):.0f} | "
                      f"{med('a2a_bytes_inter_node') / 1e6:.2f} | {med('a2a_messages_intra_node'):.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", nargs="+", default=["recompute", "zero", "comm"])
    ap.add_argument("--config", nargs="+", default=["default", "medium"], choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "efficiency"))
    args = ap.parse_args()
    for study in args.study:
        {"recompute": recompute, "zero": zero, "comm": comm}[study](args)


if __name__ == "__main__":
    sys.exit(main())
