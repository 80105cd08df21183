#!/usr/bin/python3
"""PNG figures from a sweep's results.csv or from one run directory.

    launch/plot.py DIR/results.csv [--out DIR]   # sweep: throughput and scaling efficiency vs
                                                 # ranks, step-time breakdown, loss curves; and
                                                 # the run figures of every point
    launch/plot.py RUN_DIR [--out DIR]           # run: expert load per layer over steps,
                                                 # imbalance with rebalance events, loss

Needs matplotlib (Debian: python3-matplotlib, for /usr/bin/python3).
"""
import argparse
import csv
import json
import pathlib
import re
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(f"plot: matplotlib is not importable by {sys.executable}; use /usr/bin/python3 with Debian's "
             "python3-matplotlib (apt-get install python3-matplotlib)")

DPI = 90


def read_jsonl(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save(fig, path: pathlib.Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"plot: {path}")


# ---- one run -------------------------------------------------------------------------------

def plot_run(run_dir: pathlib.Path, out: pathlib.Path, title: str) -> list[pathlib.Path]:
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r for r in records if "step_ms" in r]
    if not steps:
        print(f"plot: {run_dir}/metrics.jsonl has no steps; nothing to plot for this run")
        return []
    events = read_jsonl(run_dir / "events.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    x = [r["step"] for r in steps]

    # Loss, with held-out evaluations.
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(x, [r["loss"] for r in steps], label="training loss")
    evals = [r for r in records if r.get("eval")]
    if evals:
        ax.plot([r["step"] for r in evals], [r["heldout_loss"] for r in evals], "o-", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"Loss: {title}")
    ax.legend()
    save(fig, out / "loss.png")
    written.append(out / "loss.png")

    # Expert load: each layer's share of processed token-copies per expert, over steps.
    kept = [r.get("expert_kept") for r in steps]
    if kept[0]:
        layers = len(kept[0])
        fig, axes = plt.subplots(layers, 1, figsize=(7, 1.2 + 1.6 * layers), squeeze=False, sharex=True)
        for layer in range(layers):
            rows = []
            for k in kept:
                total = sum(k[layer]) or 1
                rows.append([c / total for c in k[layer]])
            matrix = list(map(list, zip(*rows)))  # [expert][step]
            ax = axes[layer][0]
            image = ax.imshow(matrix, aspect="auto", interpolation="nearest", cmap="viridis",
                              extent=(x[0] - 0.5, x[-1] + 0.5, len(matrix) - 0.5, -0.5))
            ax.set_ylabel(f"MoE layer {layer}\nexpert")
            fig.colorbar(image, ax=ax, label="share of copies")
        axes[-1][0].set_xlabel("step")
        axes[0][0].set_title(f"Expert load per layer: {title}")
        save(fig, out / "expert_load.png")
        written.append(out / "expert_load.png")

    # Imbalance, with the rebalance decisions that changed the placement.
    if all(r["imbalance"] == 1.0 and r["expert_time_imbalance"] == 1.0 for r in steps):
        print(f"plot: {title}: every rank holds every expert (ep = 1): no rank imbalance to plot")
        return written
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(x, [r["imbalance"] for r in steps], label="token-copies: max rank / mean")
    ax.plot(x, [r["expert_time_imbalance"] for r in steps], alpha=0.7, label="expert time: max rank / mean")
    applied = [e for e in events if e.get("event") == "rebalance" and e.get("applied")]
    for i, e in enumerate(applied):
        ax.axvline(e["step"], color="red", linestyle="--", linewidth=1, label="rebalance" if i == 0 else None)
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("imbalance (1 = balanced)")
    ax.set_title(f"Load imbalance: {title}")
    ax.legend(fontsize=8)
    save(fig, out / "imbalance.png")
    written.append(out / "imbalance.png")
    return written


# ---- a sweep -------------------------------------------------------------------------------

def number(row: dict, key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, ValueError):
        return None


def series_label(point: str) -> str:
    label = re.sub(r"(^|-)ranks\d+", "", point).strip("-")
    return label or "all points"


def plot_sweep(csv_path: pathlib.Path, out: pathlib.Path) -> None:
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        sys.exit(f"plot: {csv_path} has no successful point; nothing to plot")
    out.mkdir(parents=True, exist_ok=True)
    scaling = ok[0].get("scaling", "strong")

    # Throughput and scaling efficiency vs ranks, one line per group of points.
    groups: dict[str, list[dict]] = {}
    for r in ok:
        groups.setdefault(r["baseline_point"], []).append(r)
    fig, (ax_tps, ax_eff) = plt.subplots(1, 2, figsize=(10, 4))
    any_over = False
    for base, members in sorted(groups.items()):
        members.sort(key=lambda r: int(r["ranks"]))
        ranks = [int(r["ranks"]) for r in members]
        line, = ax_tps.plot(ranks, [number(r, "tokens_per_s") for r in members], "-", label=series_label(base))
        ax_eff.plot(ranks, [number(r, "scaling_efficiency") for r in members], "-", color=line.get_color())
        for r in members:
            over = r["oversubscribed"] == "True"
            any_over |= over
            face = "none" if over else line.get_color()
            ax_tps.plot(int(r["ranks"]), number(r, "tokens_per_s"), "o", color=line.get_color(), markerfacecolor=face)
            ax_eff.plot(int(r["ranks"]), number(r, "scaling_efficiency"), "o", color=line.get_color(), markerfacecolor=face)
    all_ranks = sorted({int(r["ranks"]) for r in ok})
    for ax in (ax_tps, ax_eff):
        ax.set_xlabel("ranks")
        ax.set_xticks(all_ranks)
    ax_tps.set_ylabel("throughput (tokens/s)")
    ax_tps.set_title(f"Throughput, {scaling} scaling")
    ax_eff.axhline(1.0, color="gray", linewidth=0.8)
    ax_eff.set_ylabel("scaling efficiency (1 = linear)")
    ax_eff.set_title(f"Scaling efficiency, {scaling} scaling")
    ax_tps.legend(fontsize=8, title="hollow: oversubscribed" if any_over else None, title_fontsize=8)
    save(fig, out / "throughput_vs_ranks.png")

    # Step-time breakdown per point.
    parts = [("compute_ms", "compute"), ("a2a_ms", "all-to-all"), ("allreduce_ms", "all-reduce (not hidden)"),
             ("rebalance_ms", "rebalance")]
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(ok) + 2), 4.2))
    bottom = [0.0] * len(ok)
    for key, label in parts:
        values = [number(r, key) or 0.0 for r in ok]
        ax.bar(range(len(ok)), values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(range(len(ok)))
    ax.set_xticklabels([r["point"] + (" *" if r["oversubscribed"] == "True" else "") for r in ok], rotation=35,
                       ha="right", fontsize=8)
    ax.set_ylabel("time per step (ms)")
    ax.set_title("Step time breakdown" + (" (* oversubscribed)" if any_over else ""))
    ax.legend(fontsize=8)
    save(fig, out / "step_breakdown.png")

    # Loss curves of every point, and each point's own run figures.
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in ok:
        run_dir = csv_path.parent / r["run_dir"]
        steps = [s for s in read_jsonl(run_dir / "metrics.jsonl") if "step_ms" in s]
        ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], label=r["point"])
        plot_run(run_dir, run_dir.parent, r["point"])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title("Loss curves")
    ax.legend(fontsize=7)
    save(fig, out / "loss_curves.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=pathlib.Path, help="a sweep's results.csv or a run directory")
    parser.add_argument("--out", type=pathlib.Path, help="where the PNGs go (default: next to the source)")
    args = parser.parse_args()
    if args.source.is_dir():
        plot_run(args.source, args.out or args.source, args.source.name)
    elif args.source.exists():
        plot_sweep(args.source, args.out or args.source.parent)
    else:
        sys.exit(f"plot: {args.source} does not exist; give a results.csv or a run directory")


if __name__ == "__main__":
    main()
