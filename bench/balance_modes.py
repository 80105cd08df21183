#!/usr/bin/env python3
"""Load balancing by the router (model.balance) and what it leaves for adaptive placement:
for each mode, train a config under mpirun and report the loss, the held-out loss, how
uneven the experts' routed counts are (max / mean over the experts of a layer, averaged over
layers and over the second half of the steps), the rank-level imbalance at ep = --np (what
balance.policy acts on) and tokens/s. Python standard library only.

  bench/balance_modes.py [--config launch/configs/deepseek-small.toml] [--np 2] [--steps 200]
                         [--modes aux_loss seq_aux_loss aux_free none] [--set key=value ...]
                         [--out runs/balance_modes]

aux_loss and seq_aux_loss use model.aux_loss_coef = 0.01 here; aux_free uses the config's
bias rate and a 1e-4 sequence-wise complement (DeepSeek-V3's); none balances nothing.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(args, mode):
    out = os.path.join(args.out, mode)
    coef = {"aux_loss": "0.01", "seq_aux_loss": "0.01", "aux_free": "1e-4", "none": "0"}[mode]
    sets = [f"parallel.ep={args.np}", f"train.steps={args.steps}", f'model.balance="{mode}"',
            f"model.aux_loss_coef={coef}", "eval.every=0", "eval.examples=0", "eval.heldout_batches=4",
            "log.progress=\"lines\""] + args.set
    cmd = ["mpirun", "-np", str(args.np), os.path.join(ROOT, "build/release/bin/moerun"), "--config", args.config,
           "--run-dir", out, "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    steps = [r for r in rows if "expert_counts" in r]
    late = steps[len(steps) // 2:]
    expert_imb = statistics.mean(
        statistics.mean(max(layer) / statistics.mean(layer) for layer in r["expert_counts"] if sum(layer) > 0)
        for r in late)
    rank_imb = statistics.mean(r["imbalance"] for r in late)
    evals = [r for r in rows if r.get("eval")]
    return {"mode": mode, "loss": statistics.mean(r["loss"] for r in steps[-10:]),
            "heldout": evals[-1]["heldout_loss"] if evals else float("nan"), "expert_imbalance": expert_imb,
            "rank_imbalance": rank_imb, "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in late)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(ROOT, "launch/configs/deepseek-small.toml"))
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--modes", nargs="+", default=["aux_loss", "seq_aux_loss", "aux_free", "none"])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--out", default=os.path.join(ROOT, "runs/balance_modes"))
    args = p.parse_args()
    results = [run(args, m) for m in args.modes]
    print(f"{'mode':<14} {'loss (last 10)':>14} {'held-out':>9} {'expert max/mean':>16} {'rank imbalance':>15} {'tokens/s':>9}")
    for r in results:
        print(f"{r['mode']:<14} {r['loss']:>14.4f} {r['heldout']:>9.4f} {r['expert_imbalance']:>16.2f} "
              f"{r['rank_imbalance']:>15.3f} {r['tokens_per_s']:>9.0f}")
    json.dump(results, open(os.path.join(args.out, "results.json"), "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
