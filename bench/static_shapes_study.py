#!/usr/bin/env python3
"""Static vs dynamic shapes (moe.shapes) on the medium config: for each router skew, run moerun
under mpirun in both static modes beside their dynamic counterparts (capacity mode against
dynamic with the same capacity factor; blockwise dropless against dynamic dropless) and report
step time, the token exchange's bytes, the expert rows computed (padding included) against the
copies the experts keep, the blocks used against the worst case, and the host's reads of device
values per step (synchronous device->host copies). Python standard library only.

  bench/static_shapes_study.py [--np 2] [--steps 12] [--zipf 0 0.8 1.2] [--capacity 1.25]
                               [--block 128] [--out runs/static_shapes]

Expert rows under static shapes: capacity mode computes C = ceil(capacity x tokens x top_k /
experts) rows per expert slot and source micro-batch; blockwise computes the block places that
hold copies (block rows each; the block matmuls skip unused places by their labels). Dynamic
shapes compute the kept copies only. Step times are medians over
steps 3.. (steps 1 and 2 warm caches); on an oversubscribed machine they mean nothing.
"""
import argparse
import json
import math
import os
import statistics
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MEDIUM = ["model.d_model=512", "model.d_ff=2048", "model.experts=8", "model.top_k=2", "model.seq_len=256",
          "model.n_layers=4", "model.n_heads=8", "train.global_batch=16", "train.micro_batch=8",
          "eval.every=0", "eval.examples=0", "eval.heldout_batches=0", "log.every=1000",
          "checkpoint.at_end=false"]
EXPERTS, TOP_K, TOKENS, LAYERS, MICRO_BATCHES = 8, 2, 8 * 256, 4, 2


def run(args, zipf, mode):
    """mode: dynamic / static (capacity factor args.capacity), dropless / blockwise (factor 0)."""
    out = os.path.join(args.out, f"zipf{zipf}_{mode}")
    dropless = mode in ("dropless", "blockwise")
    if not os.path.exists(os.path.join(out, "metrics.jsonl")):
        sets = MEDIUM + [f"train.steps={args.steps}", f"parallel.ep={args.np}", "balance.policy=none",
                         f"bench.router_zipf={zipf}", f"model.capacity_factor={0 if dropless else args.capacity}",
                         f"moe.shapes={'static' if mode in ('static', 'blockwise') else 'dynamic'}"]
        if mode == "blockwise":
            sets.append(f"moe.block_size={args.block}")
        cmd = ["mpirun", "-np", str(args.np), "--bind-to", "core", args.moerun, "--run-dir", out]
        for s in sets:
            cmd += ["--set", s]
        print("+", " ".join(cmd), flush=True)
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_btl_vader_single_copy_mechanism="none")
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    steps = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"step_ms"' in l]
    timed = [s for s in steps if s["step"] >= 3]
    kept = statistics.mean(sum(sum(layer) for layer in s["expert_kept"]) for s in timed)
    capacity = math.ceil(args.capacity * TOKENS * TOP_K / EXPERTS)
    if mode == "static":
        computed = LAYERS * MICRO_BATCHES * EXPERTS * capacity
    elif mode == "blockwise":  # the used block places of every rank's send buffers, summed over the world
        computed = args.np * statistics.mean(s["blocks"]["active"] for s in timed) * args.block
    else:
        computed = kept
    blocks = (f"{statistics.mean(s['blocks']['active'] for s in timed):.0f} / "
              f"{statistics.mean(s['blocks']['worst_case'] for s in timed):.0f}") if mode == "blockwise" else "-"
    return {"step_ms": statistics.median(s["step_ms"] for s in timed), "blocks": blocks,
            "a2a_mb": statistics.mean(s["a2a_bytes"] for s in timed) / 1e6,
            "kept": kept, "computed": computed,
            "dropped": statistics.mean(s["dropped_frac"] for s in timed),
            "reads": statistics.mean(s["device"]["host_reads"] for s in timed)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--zipf", type=float, nargs="+", default=[0.0, 0.8, 1.2])
    p.add_argument("--capacity", type=float, default=1.25)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "static_shapes"))
    p.add_argument("--moerun", default=os.path.join(ROOT, "build", "release", "bin", "moerun"))
    args = p.parse_args()
    print("| zipf | shapes | step ms | vs dynamic | a2a MB/step (rank 0) | expert rows / kept copies | dropped "
          "| blocks used / worst case (rank 0) | host reads/step |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for zipf in args.zipf:
        for baseline, static in (("dynamic", "static"), ("dropless", "blockwise")):
            base = run(args, zipf, baseline)
            for mode in (baseline, static):
                r = base if mode == baseline else run(args, zipf, mode)
                print(f"| {zipf:g} | {mode} | {r['step_ms']:.0f} | {r['step_ms'] / base['step_ms']:.2f}x | {r['a2a_mb']:.1f} "
                      f"| {r['computed'] / r['kept']:.2f} | {100 * r['dropped']:.1f}% | {r['blocks']} | {r['reads']:.0f} |",
                      flush=True)

if __name__ == "__main__":
    main()
