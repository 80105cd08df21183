#!/usr/bin/python3
"""Studies with moerun-sim: every point of a study spec simulated, a results table, and figures.

    launch/sim_study.py launch/sweeps/sim-gain.toml --out runs/sim-gain [--img docs/img] [--jobs 2]

A spec (TOML) has [study] (title, hardware, steps, figure, and optionally ranks_per_node and
seed), [base] config keys for every point, and [axes]: lists whose product is the set of
points. Axes are config keys ("balance.policy") or the simulator's own: world, nodes (world =
nodes x ranks per node), hardware, routing, ranks_per_node. parallel.ep defaults to the world
size. Figures (matplotlib, /usr/bin/python3):

  gain       tokens/s of each balance.policy over policy none at the same point, against the
             world size, one panel per routing; the dashed line is the forced-balanced bound
  exchange   all-to-all ms per step against nodes, per parallel.all_to_all and hardware
  breakdown  the step's parts (expert, dense, all-to-all, all-reduce, rebalance) per point
  interval   gain over none against balance.interval, per routing

Writes OUT/results.csv, OUT/results.md, OUT/<figure>.png (copied to --img when given) and, for
the gain and interval figures, OUT/gain.md: each policy's throughput over policy none with the
forced-balanced bound and auto's migration share (the tables in docs/scaling.md).
Figures from a hardware file with source = "specification" are projections; the figure title
says so.
"""
import argparse
import concurrent.futures
import csv
import itertools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
SIM_AXES = {"world", "nodes", "hardware", "routing", "ranks_per_node"}
PARTS = [("expert_ms", "expert (slowest rank)"), ("dense_ms", "dense + optimizer"), ("a2a_ms", "all-to-all"),
         ("allreduce_ms", "exposed all-reduce")]


def fail(message):
    sys.exit(f"sim_study: {message}")


def points(spec):
    axes = spec.get("axes", {})
    names = list(axes)
    for values in itertools.product(*(axes[n] if isinstance(axes[n], list) else [axes[n]] for n in names)):
        yield dict(zip(names, values))


def run_point(args, spec, point, index):
    study = spec["study"]
    hardware = point.get("hardware", study["hardware"])
    # Ranks per node: the axis, else [study], else the hardware file's.
    rpn = point.get("ranks_per_node", study.get("ranks_per_node", 0)) or \
        tomllib.loads((ROOT / hardware).read_text())["hardware"]["ranks_per_node"]
    if "nodes" in point:
        world = point["nodes"] * rpn
    else:
        world = point.get("world", 1)
    sets = {k: v for k, v in spec.get("base", {}).items()}
    sets.update({k: v for k, v in point.items() if k not in SIM_AXES})
    sets.setdefault("parallel.ep", world)
    for key in [k for k, v in sets.items() if isinstance(v, str) and "{world}" in v]:
        value = sets[key].replace("{world}", str(world))
        sets[key] = int(value) if value.isdigit() else value
    out = args.out / f"point-{index:03d}"
    cmd = [str(args.bin / "moerun-sim"), "run", "--hardware", str(ROOT / hardware), "--world", str(world),
           "--routing", point.get("routing", study.get("routing", "uniform")), "--steps", str(study.get("steps", 60)),
           "--seed", str(study.get("seed", 1)), "--out", str(out)]
    if rpn:
        cmd += ["--ranks-per-node", str(rpn)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v}"]
    row = dict(point, world=world, hardware=pathlib.Path(hardware).stem)
    # A point already simulated by the same command and binary is read back, not run again.
    stamp = json.dumps([cmd, (args.bin / "moerun-sim").stat().st_mtime])
    if (out / "summary.json").exists() and (out / "command.json").exists() and (out / "command.json").read_text() == stamp:
        r = subprocess.CompletedProcess(cmd, 0)
    else:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0:
            (out / "command.json").write_text(stamp)
    if r.returncode != 0:
        return dict(row, status="invalid", message=r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
    summary = json.loads((out / "summary.json").read_text())
    for k in ("median_step_ms", "mean_step_ms", "tokens_per_s", "expert_ms", "dense_ms", "a2a_ms", "allreduce_ms",
              "imbalance", "rebalances", "rebalance_share", "hierarchical", "memory_peak_bytes", "hardware_source"):
        row[k] = summary[k]
    row["status"] = "ok"
    return row


def gain_table(spec, rows):
    """Each policy's tokens/s over policy none at the same point, with the forced-balanced bound
    (routing "balanced", policy none) when the study has it, and auto's migration share."""
    ok = [r for r in rows if r["status"] == "ok"]
    x_axis = "world" if spec["study"].get("figure", "gain") == "gain" else "balance.interval"
    policies = [p for p in dict.fromkeys(r["balance.policy"] for r in ok) if p != "none"]

    def find(routing, x, policy):
        return next((r for r in ok if r["routing"] == routing and r[x_axis] == x and r["balance.policy"] == policy), None)

    head = ["routing", x_axis, "static: all-to-all share", "bound"] + policies + ["auto / bound", "migration share (auto)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for routing in dict.fromkeys(r["routing"] for r in ok if r["routing"] != "balanced"):
        for x in dict.fromkeys(r[x_axis] for r in ok if r["routing"] == routing):
            none = find(routing, x, "none")
            if not none:
                continue
            balanced, auto = find("balanced", x, "none"), find(routing, x, "auto")
            bound = balanced["tokens_per_s"] / none["tokens_per_s"] if balanced else None
            cells = [routing, str(x), f"{100 * none['a2a_ms'] / none['median_step_ms']:.0f}%",
                     f"{bound:.2f}x" if bound else "-"]
            for p in policies:
                r = find(routing, x, p)
                cells.append(f"{r['tokens_per_s'] / none['tokens_per_s']:.2f}x" if r else "-")
            cells.append(f"{auto['tokens_per_s'] / none['tokens_per_s'] / bound:.2f}" if auto and bound else "-")
            cells.append(f"{100 * auto['rebalance_share']:.1f}%" if auto else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(args, spec, rows):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import plot as P
    except ImportError:
        print(f"sim_study: matplotlib is not importable by {sys.executable}; use /usr/bin/python3: no figures")
        return []
    study = spec["study"]
    kind = study.get("figure", "gain")
    ok = [r for r in rows if r["status"] == "ok"]
    projected = any(r["hardware_source"] == "specification" for r in ok)
    title = study.get("title", kind) + (" (projection from specifications)" if projected else "")
    out = args.out / f"{kind}.png"
    if kind in ("gain", "interval"):
        x_axis = "world" if kind == "gain" else "balance.interval"
        routings = list(dict.fromkeys(r["routing"] for r in ok if r["routing"] != "balanced"))
        policies = [p for p in dict.fromkeys(r["balance.policy"] for r in ok) if p != "none"]
        cols = min(3, len(routings))
        rows_n = (len(routings) + cols - 1) // cols
        fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols + 1.6, 3.4 * rows_n), squeeze=False, sharey=True)
        colour = P.colours(policies + ["bound"])
        for i, routing in enumerate(routings):
            ax = axes[i // cols][i % cols]
            xs = sorted({r[x_axis] for r in ok if r["routing"] == routing})
            for policy in policies:
                ys = []
                for x in xs:
                    mine = next((r for r in ok if r["routing"] == routing and r[x_axis] == x and r["balance.policy"] == policy), None)
                    none = next((r for r in ok if r["routing"] == routing and r["balance.policy"] == "none" and
                                 (kind == "interval" or r[x_axis] == x)), None)
                    ys.append(mine["tokens_per_s"] / none["tokens_per_s"] if mine and none else float("nan"))
                ax.plot(xs, ys, "o-", color=colour[policy], label=policy)
            if any(r["routing"] == "balanced" for r in ok):
                bound = []
                for x in xs:
                    b = next((r for r in ok if r["routing"] == "balanced" and r[x_axis] == x and r["balance.policy"] == "none"), None)
                    none = next((r for r in ok if r["routing"] == routing and r[x_axis] == x and r["balance.policy"] == "none"), None)
                    bound.append(b["tokens_per_s"] / none["tokens_per_s"] if b and none else float("nan"))
                ax.plot(xs, bound, "--", color="0.4", label="forced-balanced bound")
            if kind == "gain":
                ax.set_xscale("log", base=2)
            ax.axhline(1.0, color="0.7", lw=0.8)
            ax.set_title(routing, fontsize=9)
            ax.set_xlabel("ranks (= EP size)" if kind == "gain" else "balance.interval (steps)")
            if i % cols == 0:
                ax.set_ylabel("tokens/s over policy none")
        for j in range(len(routings), rows_n * cols):
            axes[j // cols][j % cols].axis("off")
        fig.suptitle(title, fontsize=10)
        handles, labels = axes[0][0].get_legend_handles_labels()
        P.save(fig, out, P.figure_legend(fig, handles, labels))
    elif kind == "exchange":
        panels = list(dict.fromkeys(r.get("model.seq_len") for r in ok))
        fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.8, 4.2), squeeze=False)
        series = list(dict.fromkeys((r["hardware"], r["parallel.all_to_all"]) for r in ok))
        colour = P.colours([f"{h} {a}" for h, a in series])
        for ax, panel in zip(axes[0], panels):
            for h, a in series:
                mine = sorted((r for r in ok if r["hardware"] == h and r["parallel.all_to_all"] == a and
                               r.get("model.seq_len") == panel), key=lambda r: r["nodes"])
                ax.plot([r["nodes"] for r in mine], [r["a2a_ms"] for r in mine], "o-", color=colour[f"{h} {a}"], label=f"{h}, {a}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("nodes")
            ax.set_ylabel("all-to-all ms per step")
            if panel is not None:
                ax.set_title(f"{panel} tokens per rank", fontsize=9)
        fig.suptitle(title, fontsize=10)
        P.save(fig, out, P.figure_legend(fig, *axes[0][0].get_legend_handles_labels()))
    elif kind == "breakdown":
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(ok) + 1.8))
        labels = [" ".join(f"{r[a]}" for a in spec["axes"]) for r in ok]
        colour = P.colours([p for p, _ in PARTS])
        left = [0.0] * len(ok)
        for key, name in PARTS:
            vals = [r[key] for r in ok]
            ax.barh(range(len(ok)), vals, left=left, color=colour[key], label=name)
            left = [a + b for a, b in zip(left, vals)]
        ax.set_yticks(range(len(ok)), labels, fontsize=8)
        ax.set_xlabel("ms per step (medians)")
        fig.suptitle(title, fontsize=10)
        P.save(fig, out, P.figure_legend(fig, *ax.get_legend_handles_labels()))
    else:
        fail(f"unknown figure '{kind}' (gain, exchange, breakdown, interval)")
    return [out]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--img", type=pathlib.Path, help="copy the figures here (docs/img)")
    ap.add_argument("--bin", type=pathlib.Path, default=ROOT / "build" / "release" / "bin")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    try:
        spec = tomllib.loads(args.spec.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        fail(f"cannot read the study spec {args.spec}: {e}")
    if "study" not in spec or "hardware" not in spec["study"]:
        fail(f"{args.spec}: [study] needs hardware = \"sim/hardware/<name>.toml\"")
    if not (args.bin / "moerun-sim").exists():
        fail(f"no moerun-sim in {args.bin}; build first (cmake --build build/release)")
    args.out.mkdir(parents=True, exist_ok=True)
    todo = list(points(spec))
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda ip: run_point(args, spec, ip[1], ip[0]), enumerate(todo)))
    bad = [r for r in rows if r["status"] != "ok"]
    for r in bad:
        print(f"sim_study: point {r} refused: {r['message']}", file=sys.stderr)
    if len(bad) == len(rows):
        fail("every point was refused (above)")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(args.out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    shown = list(spec["axes"]) + ["median_step_ms", "tokens_per_s", "expert_ms", "a2a_ms", "imbalance", "rebalances",
                                  "rebalance_share"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for r in rows:
        if r["status"] == "ok":
            lines.append("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in shown) + " |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    if spec["study"].get("figure", "gain") in ("gain", "interval"):
        (args.out / "gain.md").write_text(gain_table(spec, rows))
    print(f"sim_study: {len(rows) - len(bad)} point(s) simulated; {args.out / 'results.csv'}")
    for fig in plot(args, spec, rows):
        if args.img:
            args.img.mkdir(parents=True, exist_ok=True)
            shutil.copy(fig, args.img / f"sim-{fig.name}")
            print(f"sim_study: copied to {args.img / ('sim-' + fig.name)}")


if __name__ == "__main__":
    main()
