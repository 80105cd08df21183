"""Render tests for launch/plot.py: a 48-point sweep (ranks x ep x experts x zipf, two repeats,
some points oversubscribed or noisy) made of synthetic results through sweep.py's own writers,
plotted with --strict, which fails on a figure larger than 1600x1000 px, a legend over an axes'
data area, or text cut off at an edge. Then every PNG's size is read back from its header, the
panels and colours are checked (no colour shared by two series), and the short labels map back
to the points through labels.md.

    test_plots.py <repository root> <work directory>
"""
import csv
import importlib.util
import json
import pathlib
import random
import shutil
import struct
import subprocess
import sys

root, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
try:
    import matplotlib  # noqa: F401
except ImportError:
    print(f"SKIP: {sys.executable} cannot import matplotlib (apt-get install python3-matplotlib)")
    sys.exit(0)
shutil.rmtree(work, ignore_errors=True)
work.mkdir(parents=True)


def check(condition, message):
    if not condition:
        sys.exit(f"FAIL: {message}")


spec_loader = importlib.util.spec_from_file_location("sweep", root / "launch/sweep.py")
sweep = importlib.util.module_from_spec(spec_loader)
spec_loader.loader.exec_module(sweep)

spec = {"sweep": {"scaling": "strong", "repeat": 2}, "base": {"train.steps": 30},
        "axes": {"ranks": [1, 2, 4], "ep": [1, "ranks"], "experts": [4, 8], "zipf": [0.0, 0.8, 1.2, 1.6]},
        "sizes": {}}
points = sweep.expand(spec)
check(len(points) == 48, f"{len(points)} points")
rng = random.Random(7)
results = []
for i, p in enumerate(points):
    run_dir = work / "points" / p["name"] / "run"
    run_dir.mkdir(parents=True)
    ep = p["ranks"] if p["axes"]["ep"] == "ranks" else 1
    experts, zipf = p["axes"]["experts"], p["axes"]["zipf"]
    step_ms = 100.0 / p["ranks"] * (1 + 0.3 * zipf) * rng.uniform(0.9, 1.1)
    lines = []
    for step in range(1, 31):
        kept = [[max(1, int(1000 / (e + 1) ** zipf)) for e in range(experts)] for _ in range(2)]
        lines.append({"step": step, "loss": 5.5 * step ** -0.3 + 0.01 * i, "step_ms": step_ms, "imbalance": 1 + zipf / 2,
                      "expert_time_imbalance": 1 + zipf / 3, "expert_kept": kept})
    lines.append({"summary": True})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    (run_dir / "events.jsonl").write_text(json.dumps({"event": "rebalance", "step": 10, "applied": ep > 1}) + "\n")
    tps = 64 * 64 / (step_ms / 1000)
    noisy = i % 11 == 3
    low, high = tps * (0.7 if noisy else 0.97), tps * (1.1 if noisy else 1.02)
    results.append({"point": p["name"], "label": p["label"], "status": "ok", "ranks": p["ranks"], "ep": ep,
                    "experts": experts, "zipf": zipf, "oversubscribed": p["ranks"] > 2, "tokens_per_s": tps,
                    "tokens_per_s_min": low, "tokens_per_s_max": high, "tokens_per_s_spread": (high - low) / tps,
                    "noisy": noisy, "repeats": 2, "step_ms": step_ms, "compute_ms": 0.7 * step_ms,
                    "a2a_ms": 0.2 * step_ms if ep > 1 else 0.0, "allreduce_ms": 0.1 * step_ms if ep == 1 else 0.3 * step_ms,
                    "rebalance_ms": 0.0, "run_dir": str(run_dir.relative_to(work)), "spec": sweep.spec_key(p)})
sweep.add_scaling(results, points, "strong")
sweep.write_csv(results, work / "results.csv", [])
sweep.write_axes(points, work / "axes.json", spec["base"])

p = subprocess.run([sys.executable, str(root / "launch/plot.py"), str(work / "results.csv"), "--strict"],
                   capture_output=True, text=True)
print(p.stdout, p.stderr)
check(p.returncode == 0, "plot.py --strict found layout problems (above)")


def png_size(path: pathlib.Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    check(data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG")
    return struct.unpack(">II", data[16:24])


figures = sorted(work.glob("*.png")) + sorted(work.glob("points/*/*.png"))
names = {f.name for f in figures}
check({"throughput_vs_ranks.png", "step_breakdown.png", "step_breakdown-2.png", "loss_curves.png"} <= names,
      f"figures: {sorted(names)}")
for f in figures:
    w, h = png_size(f)
    check(w <= 1600 and h <= 1000, f"{f.name} is {w}x{h} px")
    check(w >= 400 and h >= 250, f"{f.name} is only {w}x{h} px")

# Panels and colours: 24 groups (ep x experts x zipf) for throughput -> 6 series (ep x experts
# coloured... no: 2 x 2 = 4 series fit, zipf's 4 values become panels); loss curves colour
# ranks x ep (6) and panel experts x zipf (8).
plot = importlib.util.spec_from_file_location("plot", root / "launch/plot.py")
plot_module = importlib.util.module_from_spec(plot)
plot.loader.exec_module(plot_module)
rows, axes = plot_module.read_sweep(work / "results.csv")
series, panels = plot_module.split_axes(rows, [a for a in axes if a != "ranks"])
check(series == ["ep", "experts"] and panels == ["zipf"], f"throughput series {series}, panels {panels}")
series, panels = plot_module.split_axes(rows, axes)
check(series == ["ranks", "ep"] and panels == ["experts", "zipf"], f"loss series {series}, panels {panels}")
keys = [f"k{i}" for i in range(16)]
check(len(set(plot_module.colours(keys).values())) == 16, "16 series share colours")

# Every short label in the figures maps back to its point and settings.
table = (work / "labels.md").read_text()
for p_ in points:
    check(f"| `{p_['label']}` | {p_['name']} |" in table, f"labels.md lacks {p_['label']}")
check("| `2/ranks/8/1.2` | ranks2-epranks-experts8-zipf1.2 | ranks=2 parallel.ep=2 model.experts=8 bench.router_zipf=1.2 |"
      in table, "labels.md does not spell out a point's settings")
with open(work / "results.csv") as f:
    check(all(r["label"] for r in csv.DictReader(f)), "a row without its label")

# The layout check itself can fail: a legend drawn on the data is reported.
import matplotlib.pyplot as plt  # noqa: E402
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([0, 1], [0, 1], label="a line")
ax.legend(loc="center")
check(any("covers the data area" in m for m in plot_module.layout_problems(fig)), "a legend on the data was not reported")
fig = plt.figure(figsize=(20, 5), dpi=100)
fig.add_subplot()
check(any("larger than 1600x1000" in m for m in plot_module.layout_problems(fig)), "an oversized figure was not reported")
print("plot render test OK")
