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

DPI = 100
MAX_WIDTH_PX, MAX_HEIGHT_PX = 1600, 1000  # a figure fits a page or a screen without zooming
STRICT = False  # --strict: a layout problem fails the run (the render tests use it)


def read_jsonl(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def figure_legend(fig, *handles_and_labels):
    """The figure's legend at its top right, below a figure title; save() keeps the panels left of it."""
    top = 0.93 if fig._suptitle is not None else 1.0
    return fig.legend(*handles_and_labels, loc="upper right", bbox_to_anchor=(1.0, top), fontsize=8, frameon=False)


def save(fig, path: pathlib.Path, legend=None) -> None:
    """Lays the panels out beside the figure legend (never on the data), checks the layout, writes."""
    fig.canvas.draw()
    if legend is not None:
        width = legend.get_window_extent().width / fig.bbox.width
        top = 0.95 if fig._suptitle is not None else 1.0
        fig.tight_layout(rect=(0, 0, 1 - width - 0.01, top))
    else:
        fig.tight_layout()
    problems = layout_problems(fig)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"plot: {path}")
    for p in problems:
        print(f"plot: {path.name}: {p}", file=sys.stderr)
    if problems and STRICT:
        sys.exit(f"plot: {path} has layout problems (above)")


def layout_problems(fig) -> list[str]:
    """What makes a figure hard to read: too large, a legend over an axes' data area, text cut off
    at the figure's edge, or panels whose labels run into each other."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    problems = []
    if width > MAX_WIDTH_PX + 0.5 or height > MAX_HEIGHT_PX + 0.5:
        problems.append(f"{width:.0f}x{height:.0f} px is larger than {MAX_WIDTH_PX}x{MAX_HEIGHT_PX}")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    legends = list(fig.legends) + [ax.get_legend() for ax in visible if ax.get_legend() is not None]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in visible:
            if box.overlaps(ax.bbox):
                problems.append(f"a legend covers the data area of '{ax.get_title() or ax.get_ylabel()}'")
        if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1:
            problems.append("a legend is cut off at the figure's edge")
        for text in fig.texts + ([fig._suptitle] if fig._suptitle is not None else []):
            if text.get_text() and box.overlaps(text.get_window_extent(renderer)):
                problems.append(f"a legend covers the figure's title '{text.get_text()}'")
    boxes = [(ax, ax.get_tightbbox(renderer)) for ax in visible]
    for ax, box in boxes:
        if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1:
            problems.append(f"the labels of '{ax.get_title() or ax.get_ylabel()}' are cut off at the figure's edge")
    for a, _ in boxes:
        for b, box_b in boxes:
            if a is not b and a.bbox.overlaps(box_b) and not (a.bbox.overlaps(b.bbox)):
                problems.append(f"the labels of '{b.get_title() or b.get_ylabel()}' run into the data area of "
                                f"'{a.get_title() or a.get_ylabel()}'")
    return problems


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
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(x, [r["loss"] for r in steps], label="training loss")
    evals = [r for r in records if r.get("eval")]
    if evals:
        ax.plot([r["step"] for r in evals], [r["heldout_loss"] for r in evals], "o-", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"Loss: {title}", fontsize=10)
    save(fig, out / "loss.png", figure_legend(fig))
    written.append(out / "loss.png")

    # Expert load: each layer's share of processed token-copies per expert, over steps.
    kept = [r.get("expert_kept") for r in steps]
    if kept[0]:
        layers = len(kept[0])
        fig, axes = plt.subplots(layers, 1, figsize=(8, min(10.0, 1.2 + 1.6 * layers)), squeeze=False, sharex=True)
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
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(x, [r["imbalance"] for r in steps], label="token-copies: max rank / mean")
    ax.plot(x, [r["expert_time_imbalance"] for r in steps], alpha=0.7, label="expert time: max rank / mean")
    applied = [e for e in events if e.get("event") == "rebalance" and e.get("applied")]
    for i, e in enumerate(applied):
        ax.axvline(e["step"], color="red", linestyle="--", linewidth=1, label="rebalance" if i == 0 else None)
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("imbalance (1 = balanced)")
    ax.set_title(f"Load imbalance: {title}", fontsize=10)
    save(fig, out / "imbalance.png", figure_legend(fig))
    written.append(out / "imbalance.png")
    return written


# ---- a sweep -------------------------------------------------------------------------------
#
# A sweep's points vary along several axes. Each figure shows at most MAX_SERIES series per
# panel, coloured by the first axes (in the spec's order) whose combinations fit; the other axes
# become panels (small multiples), and past a page's worth of panels the figure continues in a
# second file. Colours come from one map, so a colour means the same series in every panel; the
# legend sits beside the panels, never on the data.

MAX_SERIES = 6
FALLBACK_AXES = ["ranks", "ep", "experts", "top_k", "capacity_factor", "skew", "zipf", "policy", "d_model", "d_ff",
                 "n_layers"]


def number(row: dict, key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, ValueError, TypeError):
        return None


def read_sweep(csv_path: pathlib.Path) -> tuple[list[dict], list[str]]:
    """The rows of results.csv with each row's axis values (row["axes"]) and the axes in order."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    axes_file = csv_path.parent / "axes.json"
    if axes_file.exists():
        meta = json.loads(axes_file.read_text())
        axes = meta["axes"]
        for r in rows:
            r["axes"] = meta["points"].get(r["point"], {})
    else:  # a sweep written before axes.json: the standard columns that vary
        axes = [a for a in FALLBACK_AXES if len({r.get(a) for r in rows}) > 1]
        for r in rows:
            r["axes"] = {a: r.get(a) for a in axes}
    for r in rows:
        r.setdefault("label", r["point"])
        r["label"] = r["label"] or r["point"]
    return rows, axes


def distinct(rows: list[dict], axis: str) -> list:
    return list(dict.fromkeys(r["axes"].get(axis) for r in rows))


def split_axes(rows: list[dict], axes: list[str]) -> tuple[list[str], list[str]]:
    """(series axes, panel axes): series while their combinations fit MAX_SERIES, panels after."""
    series, panels, product = [], [], 1
    for a in axes:
        n = len(distinct(rows, a))
        if n <= 1:
            continue
        if not series or (not panels and product * n <= MAX_SERIES):
            series.append(a)
            product *= n
        else:
            panels.append(a)
    return series, panels


def describe(row: dict, axes: list[str]) -> str:
    return ", ".join(f"{a}={row['axes'].get(a)}" for a in axes)


def group_by(rows: list[dict], axes: list[str]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(describe(r, axes), []).append(r)
    return groups


def colours(keys: list[str]) -> dict[str, tuple]:
    """One colour per key from a single map: tab10 up to 10 keys, else evenly along viridis."""
    if len(keys) <= 10:
        cmap = plt.get_cmap("tab10")
        return {k: cmap(i) for i, k in enumerate(keys)}
    cmap = plt.get_cmap("viridis")
    return {k: cmap(i / (len(keys) - 1)) for i, k in enumerate(keys)}


def chunks(items: list, most: int) -> list[list]:
    """items in as few parts of at most `most` as possible, of even sizes."""
    parts = max(1, -(-len(items) // most))
    size = -(-len(items) // parts)
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def numbered(path: pathlib.Path, part: int) -> pathlib.Path:
    return path if part == 0 else path.with_name(f"{path.stem}-{part + 1}{path.suffix}")


def marker_legend(handles: list, labels: list, any_over: bool, any_noisy: bool) -> None:
    from matplotlib.lines import Line2D
    if any_over:
        handles.append(Line2D([], [], marker="o", color="gray", markerfacecolor="none", linestyle=""))
        labels.append("oversubscribed (timing meaningless)")
    if any_noisy:
        handles.append(Line2D([], [], marker="X", color="gray", linestyle="", markersize=8))
        labels.append("noisy (spread > threshold)")


def plot_sweep(csv_path: pathlib.Path, out: pathlib.Path) -> list[pathlib.Path]:
    rows, axes = read_sweep(csv_path)
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        sys.exit(f"plot: {csv_path} has no successful point; nothing to plot")
    out.mkdir(parents=True, exist_ok=True)
    written = plot_throughput(ok, axes, out) + plot_breakdown(ok, axes, out) + plot_loss_curves(ok, axes, csv_path, out)
    for r in ok:
        written += plot_run(csv_path.parent / r["run_dir"], (csv_path.parent / r["run_dir"]).parent, r["label"])
    return written


def plot_throughput(ok: list[dict], axes: list[str], out: pathlib.Path) -> list[pathlib.Path]:
    """Throughput (top) and scaling efficiency (bottom) against ranks, one panel pair per facet."""
    if "ranks" not in axes or len(distinct(ok, "ranks")) < 2:
        print("plot: ranks is not a varied axis; no throughput-vs-ranks figure")
        return []
    scaling = ok[0].get("scaling", "strong")
    series_axes, panel_axes = split_axes(ok, [a for a in axes if a != "ranks"])
    series = list(group_by(ok, series_axes))
    colour = colours(series)
    any_over = any(r["oversubscribed"] == "True" for r in ok)
    any_noisy = any(r.get("noisy") == "True" for r in ok)
    all_ranks = sorted({int(r["ranks"]) for r in ok})
    written = []
    for part, facets in enumerate(chunks(list(group_by(ok, panel_axes).items()), 8)):
        if len(facets) == 1:  # one panel pair: side by side
            fig, grid = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
            pairs, ncols, panels_of = 1, 1, lambda i: (grid[0][0], grid[0][1])
        else:  # throughput above efficiency, one column per facet, up to 4 columns
            ncols = min(4, len(facets))
            pairs = -(-len(facets) // ncols)
            fig, grid = plt.subplots(2 * pairs, ncols, figsize=(3.2 * ncols + 2.8, 2.3 * 2 * pairs + 0.6), squeeze=False)
            panels_of = lambda i: (grid[2 * (i // ncols)][i % ncols], grid[2 * (i // ncols) + 1][i % ncols])  # noqa: E731
        for i, (facet, members) in enumerate(facets):
            ax_tps, ax_eff = panels_of(i)
            for name, line_rows in group_by(members, series_axes).items():
                line_rows.sort(key=lambda r: int(r["ranks"]))
                for ax, key in ((ax_tps, "tokens_per_s"), (ax_eff, "scaling_efficiency")):
                    x = [int(r["ranks"]) for r in line_rows]
                    ax.plot(x, [number(r, key) for r in line_rows], "-", color=colour[name])
                    for r in line_rows:
                        hollow = r["oversubscribed"] == "True"
                        ax.plot(int(r["ranks"]), number(r, key), "X" if r.get("noisy") == "True" else "o",
                                color=colour[name], markerfacecolor="none" if hollow else colour[name], markersize=6)
                    if key == "tokens_per_s" and any(number(r, "tokens_per_s_min") for r in line_rows):
                        low = [number(r, key) - (number(r, "tokens_per_s_min") or number(r, key)) for r in line_rows]
                        high = [(number(r, "tokens_per_s_max") or number(r, key)) - number(r, key) for r in line_rows]
                        ax.errorbar(x, [number(r, key) for r in line_rows], yerr=[low, high], fmt="none",
                                    ecolor=colour[name], capsize=3, linewidth=0.8)
            title = facet if panel_axes else ""
            ax_tps.set_title(title, fontsize=9)
            ax_tps.set_ylabel("tokens/s")
            ax_eff.set_ylabel("scaling efficiency")
            ax_eff.axhline(1.0, color="gray", linewidth=0.8)
            for ax in (ax_tps, ax_eff):
                ax.set_xticks(all_ranks)
                ax.tick_params(labelsize=8)
            ax_eff.set_xlabel("ranks")
            if len(facets) == 1:
                ax_tps.set_xlabel("ranks")
        for j in range(len(facets), pairs * ncols):
            for ax in panels_of(j):
                ax.set_visible(False)
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], color=colour[n], marker="o") for n in series]
        labels = list(series) if series_axes else ["all points"]
        marker_legend(handles, labels, any_over, any_noisy)
        repeats = any(number(r, "repeats") and number(r, "repeats") > 1 for r in ok)
        fig.suptitle(f"Throughput and scaling efficiency, {scaling} scaling"
                     + (" (error bars: min-max over repeats)" if repeats else ""), fontsize=10)
        path = numbered(out / "throughput_vs_ranks.png", part)
        save(fig, path, figure_legend(fig, handles, labels))
        written.append(path)
    return written


def plot_breakdown(ok: list[dict], axes: list[str], out: pathlib.Path) -> list[pathlib.Path]:
    """The step time of every point split into its parts, one horizontal bar per point."""
    parts = [("compute_ms", "compute"), ("a2a_ms", "all-to-all"), ("allreduce_ms", "all-reduce (not hidden)"),
             ("rebalance_ms", "rebalance")]
    written = []
    for part, members in enumerate(chunks(ok, 40)):
        fig, ax = plt.subplots(figsize=(9, 0.22 * len(members) + 1.4))
        y = list(range(len(members)))[::-1]
        left = [0.0] * len(members)
        cmap = plt.get_cmap("tab10")
        for i, (key, label) in enumerate(parts):
            values = [number(r, key) or 0.0 for r in members]
            ax.barh(y, values, left=left, label=label, color=cmap(i), height=0.75)
            left = [a + v for a, v in zip(left, values)]
        ax.set_yticks(y)
        ax.set_yticklabels([r["label"] + (" *" if r["oversubscribed"] == "True" else "")
                            + (" !" if r.get("noisy") == "True" else "") for r in members], fontsize=8)
        ax.set_ylim(-0.6, len(members) - 0.4)
        ax.set_ylabel(" / ".join(axes) if axes else "point")
        ax.set_xlabel("time per step (ms)")
        ax.set_title("Step time breakdown (* oversubscribed, ! noisy)", fontsize=10)
        path = numbered(out / "step_breakdown.png", part)
        save(fig, path, figure_legend(fig))
        written.append(path)
    return written


def plot_loss_curves(ok: list[dict], axes: list[str], csv_path: pathlib.Path, out: pathlib.Path) -> list[pathlib.Path]:
    series_axes, panel_axes = split_axes(ok, axes)
    series = list(group_by(ok, series_axes))
    colour = colours(series)
    written = []
    for part, facets in enumerate(chunks(list(group_by(ok, panel_axes).items()), 12)):
        ncols = min(4, len(facets))
        nrows = -(-len(facets) // ncols)
        fig, grid = plt.subplots(nrows, ncols, figsize=(3.2 * ncols + 2.8, 2.6 * nrows + 0.6), squeeze=False,
                                 sharex=True)
        for i, (facet, members) in enumerate(facets):
            ax = grid[i // ncols][i % ncols]
            for name, line_rows in group_by(members, series_axes).items():
                for r in line_rows:
                    steps = [s for s in read_jsonl(csv_path.parent / r["run_dir"] / "metrics.jsonl") if "step_ms" in s]
                    ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], color=colour[name], linewidth=1)
            ax.set_title(facet if panel_axes else "", fontsize=9)
            ax.tick_params(labelsize=8)
            if i % ncols == 0:
                ax.set_ylabel("loss (nats/token)")
            if i // ncols == nrows - 1 or i + ncols >= len(facets):
                ax.set_xlabel("step")
                ax.xaxis.set_tick_params(labelbottom=True)
        for j in range(len(facets), nrows * ncols):
            grid[j // ncols][j % ncols].set_visible(False)
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], color=colour[n]) for n in series]
        fig.suptitle("Training loss", fontsize=10)
        path = numbered(out / "loss_curves.png", part)
        save(fig, path, figure_legend(fig, handles, list(series) if series_axes else ["all points"]))
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=pathlib.Path, help="a sweep's results.csv or a run directory")
    parser.add_argument("--out", type=pathlib.Path, help="where the PNGs go (default: next to the source)")
    parser.add_argument("--strict", action="store_true",
                        help="fail on a layout problem (a figure over 1600x1000 px, a legend on the data, cut-off text)")
    args = parser.parse_args()
    global STRICT
    STRICT = args.strict
    if args.source.is_dir():
        plot_run(args.source, args.out or args.source, args.source.name)
    elif args.source.exists():
        plot_sweep(args.source, args.out or args.source.parent)
    else:
        sys.exit(f"plot: {args.source} does not exist; give a results.csv or a run directory")


if __name__ == "__main__":
    main()
