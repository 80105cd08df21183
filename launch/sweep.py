#!/usr/bin/python3
"""Run a moerun sweep: every combination of the axes in a sweep file, one mpirun job per point,
collected into DIR/results.csv, then plotted into DIR (launch/plot.py).

    launch/sweep.py SPEC.toml|SPEC.json [--out DIR] [--dry-run] [--rerun] [--collect] [--timeout S]

A sweep can be resumed: points whose DIR/points/<name>/result.json matches the spec are not run
again (--rerun runs them all). Points that failed are retried. The sweep file:

    [sweep]
    scaling = "strong"   # strong: train.global_batch fixed; weak: it is the batch per rank
    warmup = 5           # leading steps left out of the timing (the first step builds caches)
    [base]               # moerun config keys for every point
    "train.steps" = 30
    [axes]               # lists of values; every combination is a point
    ranks = [1, 2]
    ep = ["ranks"]       # "ranks": expert parallelism over all ranks of the point
    [sizes.small]        # named model sizes for a `size` axis (built-in: tiny, small, medium)
    "model.d_model" = 128

Axis names: ranks, ep, experts, top_k, capacity_factor, skew (data.skew), zipf
(bench.router_zipf), policy (balance.policy), size, or any full config key ("model.d_ff").
Python 3.11+ standard library; plots need matplotlib (Debian: python3-matplotlib) and are
skipped with a message without it.
"""
import argparse
import csv
import itertools
import json
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import tomllib

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent

AXIS_KEYS = {
    "ep": "parallel.ep",
    "experts": "model.experts",
    "top_k": "model.top_k",
    "capacity_factor": "model.capacity_factor",
    "skew": "data.skew",
    "zipf": "bench.router_zipf",
    "policy": "balance.policy",
}

BUILTIN_SIZES = {
    "tiny": {"model.d_model": 64, "model.d_ff": 128, "model.n_layers": 2, "model.n_heads": 4},
    "small": {"model.d_model": 128, "model.d_ff": 512, "model.n_layers": 3, "model.n_heads": 4},
    "medium": {"model.d_model": 512, "model.d_ff": 2048, "model.n_layers": 4, "model.n_heads": 8},
}

COLUMNS = [
    "point", "status", "ranks", "dp", "ep", "experts", "top_k", "capacity_factor", "skew", "zipf", "policy",
    "d_model", "d_ff", "n_layers", "global_batch", "scaling", "oversubscribed", "timed_steps",
    "tokens_per_s", "tokens_per_s_per_rank", "speedup", "scaling_efficiency", "baseline_point",
    "step_ms", "step_ms_median", "compute_ms", "a2a_ms", "allreduce_ms", "rebalance_ms",
    "imbalance_mean", "imbalance_last", "expert_time_imbalance", "a2a_mib_per_step", "rebalances",
    "final_loss", "peak_device_mib", "peak_rss_mib", "wall_s", "run_dir", "message",
]


def fail(message: str) -> None:
    sys.exit(f"sweep: {message}")


def load_spec(path: pathlib.Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        fail(f"cannot read the sweep file {path}: {e.strerror}")
    try:
        spec = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        fail(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}")
    unknown = set(spec) - {"sweep", "base", "axes", "sizes"}
    if unknown:
        fail(f"{path}: unknown section(s) {sorted(unknown)}; allowed: sweep, base, axes, sizes")
    axes = spec.get("axes", {})
    if not axes:
        fail(f"{path}: no [axes]; list at least one, e.g. ranks = [1, 2]")
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            fail(f"{path}: axis '{name}' must be a non-empty list, e.g. {name} = [1, 2]")
        if name not in AXIS_KEYS and name not in ("ranks", "size") and "." not in name:
            fail(f"{path}: unknown axis '{name}'; use one of ranks, size, {', '.join(AXIS_KEYS)} or a full "
                 f"config key such as model.d_ff (moerun --config-reference lists them)")
    sweep = spec.setdefault("sweep", {})
    if sweep.get("scaling", "strong") not in ("strong", "weak"):
        fail(f"{path}: sweep.scaling = {sweep['scaling']!r} must be \"strong\" or \"weak\"")
    spec["sizes"] = {**BUILTIN_SIZES, **spec.get("sizes", {})}
    for size in axes.get("size", []):
        if size not in spec["sizes"]:
            fail(f"{path}: size '{size}' is not defined; add [sizes.{size}] or use one of {sorted(spec['sizes'])}")
    return spec


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def slug(axis_values: dict) -> str:
    parts = []
    for k, v in axis_values.items():
        short = k.split(".")[-1]
        parts.append(f"{short}{v}")
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(parts))


def expand(spec: dict) -> list[dict]:
    """Every combination of the axes: its settings, or the reason it cannot run."""
    axes = spec["axes"]
    base = dict(spec.get("base", {}))
    scaling = spec["sweep"].get("scaling", "strong")
    points = []
    for combo in itertools.product(*axes.values()):
        axis_values = dict(zip(axes.keys(), combo))
        settings = dict(base)
        ranks = int(axis_values.get("ranks", spec["sweep"].get("ranks", 1)))
        if "size" in axis_values:
            settings.update(spec["sizes"][axis_values["size"]])
        for name, value in axis_values.items():
            if name in ("ranks", "size"):
                continue
            key = AXIS_KEYS.get(name, name)
            settings[key] = ranks if value == "ranks" else value
        if scaling == "weak":
            if "train.global_batch" not in settings:
                fail("weak scaling needs \"train.global_batch\" in [base]: the batch per rank, multiplied by the ranks")
            settings["train.global_batch"] = int(settings["train.global_batch"]) * ranks
        point = {"name": slug(axis_values), "axes": axis_values, "ranks": ranks, "settings": settings}
        points.append(point)
    names = [p["name"] for p in points]
    if len(set(names)) != len(names):
        fail("two points have the same name; make axis values distinct")
    return points


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def moerun_command(point: dict, run_dir: pathlib.Path, oversubscribe: bool) -> list[str]:
    cmd = [str(HERE / "moerun-local.sh"), "-n", str(point["ranks"])]
    if oversubscribe:
        cmd.append("--oversubscribe")
    cmd += ["--", "--run-dir", str(run_dir), "--set", "log.progress=lines"]
    for key, value in point["settings"].items():
        cmd += ["--set", f"{key}={toml_value(value)}"]
    return cmd


def read_jsonl(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(run_dir: pathlib.Path, warmup: int, ranks: int) -> dict:
    """The figures of one finished run from its metrics.jsonl, events.jsonl and config.json."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r for r in records if "step_ms" in r]
    summary = next((r for r in records if r.get("summary")), None)
    if not steps or summary is None:
        raise RuntimeError(f"{run_dir}/metrics.jsonl has no finished run (no step lines or no summary)")
    config = json.loads((run_dir / "config.json").read_text())
    timed = steps[warmup:] if len(steps) > warmup else steps[-1:]
    events = read_jsonl(run_dir / "events.jsonl")
    rebalance_ms = sum(e.get("rebalance_ms", 0.0) for e in events if e.get("event") == "rebalance"
                       and timed[0]["step"] <= e["step"] <= timed[-1]["step"])
    tokens_per_step = config["train"]["global_batch"] * config["model"]["seq_len"]
    total_ms = sum(r["step_ms"] for r in timed) + rebalance_ms
    mean = lambda key: statistics.fmean(r[key] for r in timed)  # noqa: E731
    half = steps[len(steps) // 2:]
    return {
        "dp": ranks // config["parallel"]["ep"], "timed_steps": len(timed),
        "tokens_per_s": tokens_per_step * len(timed) / (total_ms / 1000.0),
        "step_ms": mean("step_ms"), "step_ms_median": statistics.median(r["step_ms"] for r in timed),
        "compute_ms": mean("compute_ms"), "a2a_ms": mean("a2a_ms"), "allreduce_ms": mean("allreduce_ms"),
        "rebalance_ms": rebalance_ms / len(timed),
        "imbalance_mean": statistics.fmean(r["imbalance"] for r in half), "imbalance_last": steps[-1]["imbalance"],
        "expert_time_imbalance": statistics.fmean(r["expert_time_imbalance"] for r in half),
        "a2a_mib_per_step": mean("a2a_bytes") / 2**20, "rebalances": summary["rebalances"],
        "final_loss": steps[-1]["loss"], "peak_device_mib": summary["peak_device_bytes"] / 2**20,
        "peak_rss_mib": summary["peak_rss_bytes"] / 2**20,
        "experts": config["model"]["experts"], "top_k": config["model"]["top_k"],
        "capacity_factor": config["model"]["capacity_factor"], "skew": config["data"]["skew"],
        "zipf": config["bench"]["router_zipf"],
        "policy": config["balance"]["policy"], "ep": config["parallel"]["ep"],
        "d_model": config["model"]["d_model"], "d_ff": config["model"]["d_ff"], "n_layers": config["model"]["n_layers"],
        "global_batch": config["train"]["global_batch"],
    }


def run_point(point: dict, out: pathlib.Path, warmup: int, timeout: float, cores: int) -> dict:
    point_dir = out / "points" / point["name"]
    run_dir = point_dir / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a partial run of an earlier attempt
    point_dir.mkdir(parents=True, exist_ok=True)
    oversubscribed = point["ranks"] > cores
    cmd = moerun_command(point, run_dir, oversubscribed)
    log_path = point_dir / "log.txt"
    start = time.monotonic()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    wall = time.monotonic() - start
    result = {"point": point["name"], "ranks": point["ranks"], "oversubscribed": oversubscribed, "wall_s": wall,
              "run_dir": str(run_dir.relative_to(out)), "spec": spec_key(point)}
    if code != 0:
        lines = [l for l in log_path.read_text().splitlines() if "error" in l.lower()]
        # moerun's own message first: Open MPI's abort banner ("with errorcode 1.") may come before it.
        lines = [l for l in lines if "moerun" in l] + [l for l in lines if "moerun" not in l]
        why = "timed out after %.0f s" % timeout if code is None else (lines[0] if lines else f"exit code {code}")
        # moerun refuses a layout that does not fit before it starts: not a failure of the sweep.
        invalid = code is not None and any("moerun config error" in l for l in lines)
        result.update(status="invalid" if invalid else "failed", message=f"{why} (log: {log_path.relative_to(out)})")
        for column, key in AXIS_KEYS.items():  # what the point asked for, since no run reports it
            if key in point["settings"]:
                result[column] = point["settings"][key]
    else:
        result.update(status="ok", message="oversubscribed: timing meaningless" if oversubscribed else "")
        result.update(summarize(run_dir, warmup, point["ranks"]))
    (point_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def collect_point(point: dict, out: pathlib.Path, warmup: int) -> dict:
    run_dir = out / "points" / point["name"] / "run"
    result = {"point": point["name"], "ranks": point["ranks"], "oversubscribed": False, "wall_s": "",
              "run_dir": str(run_dir.relative_to(out)), "spec": spec_key(point), "status": "missing",
              "message": f"no finished run in {run_dir}"}
    try:
        result.update(summarize(run_dir, warmup, point["ranks"]))
    except (OSError, RuntimeError):
        return result
    result.update(status="ok", message="collected")
    return result


def spec_key(point: dict) -> dict:
    return {"ranks": point["ranks"], "settings": point["settings"]}


def add_scaling(results: list[dict], points: list[dict], scaling: str) -> None:
    """Speedup and efficiency against the point with the fewest ranks that differs only in ranks
    (ep given as "ranks" counts as the same value)."""
    by_name = {p["name"]: p for p in points}
    groups: dict[str, list[dict]] = {}
    for r in results:
        axes = by_name[r["point"]]["axes"]
        key = json.dumps({k: v for k, v in axes.items() if k != "ranks"}, sort_keys=True)
        groups.setdefault(key, []).append(r)
    for members in groups.values():
        ok = [r for r in members if r["status"] == "ok"]
        if not ok:
            continue
        base = min(ok, key=lambda r: r["ranks"])
        for r in ok:
            r["speedup"] = r["tokens_per_s"] / base["tokens_per_s"]
            r["scaling_efficiency"] = r["speedup"] / (r["ranks"] / base["ranks"])
            r["baseline_point"] = base["point"]
    for r in results:
        r["scaling"] = scaling
        if r["status"] == "ok":
            r["tokens_per_s_per_rank"] = r["tokens_per_s"] / r["ranks"]


def write_csv(results: list[dict], path: pathlib.Path, extra_axes: list[str]) -> None:
    columns = COLUMNS[:3] + extra_axes + COLUMNS[3:]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            row = {}
            for c in columns:
                v = r.get(c, "")
                row[c] = f"{v:.6g}" if isinstance(v, float) else v
            writer.writerow(row)


def python_with(module: str) -> str | None:
    """An interpreter that can import `module`: this one, Debian's, or the first on PATH."""
    for candidate in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if candidate and os.path.exists(candidate):
            if subprocess.run([candidate, "-c", f"import {module}"], capture_output=True).returncode == 0:
                return candidate
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=pathlib.Path, help="sweep file (TOML or JSON)")
    parser.add_argument("--out", type=pathlib.Path, help="output directory (default sweeps/<spec name>)")
    parser.add_argument("--dry-run", action="store_true", help="list the points and their commands, run nothing")
    parser.add_argument("--rerun", action="store_true", help="run every point again, even those already done")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per point before it is killed")
    parser.add_argument("--no-plots", action="store_true", help="write results.csv only")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: collect the points whose run directories (DIR/points/<name>/run) were "
                             "filled by jobs started elsewhere, e.g. one Slurm job per point")
    args = parser.parse_args()

    spec = load_spec(args.spec)
    out = args.out or ROOT / "sweeps" / args.spec.stem
    points = expand(spec)
    warmup = int(spec["sweep"].get("warmup", 5))
    scaling = spec["sweep"].get("scaling", "strong")
    cores = usable_cores()
    binary = pathlib.Path(os.environ.get("MOERUN_BIN", ROOT / "build/release/bin/moerun"))
    if args.dry_run:
        for p in points:
            print(f"{p['name']}: " + " ".join(moerun_command(p, out / "points" / p["name"] / "run", p["ranks"] > cores)))
        return 0
    if not binary.exists() and not args.collect:
        fail(f"{binary} not found; build first: bash launch/build.sh (or set MOERUN_BIN)")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.spec, out / ("spec" + args.spec.suffix))
    results = []
    print(f"sweep: {len(points)} point(s) -> {out} ({cores} core(s); points with more ranks are oversubscribed)")
    for i, p in enumerate(points, 1):
        prefix = f"[{i}/{len(points)}] {p['name']}"
        done = out / "points" / p["name"] / "result.json"
        if done.exists() and not args.rerun:
            previous = json.loads(done.read_text())
            if previous.get("status") in ("ok", "invalid") and previous.get("spec") == spec_key(p):
                print(f"{prefix}: done before, " + (f"{previous['tokens_per_s']:.0f} tokens/s" if previous["status"] == "ok"
                                                     else previous["message"]))
                results.append(previous)
                continue
        twin = next((r for r in results if r.get("spec") == spec_key(p) and r["status"] != "failed"), None)
        if twin is not None:  # e.g. ep = 1 and ep = "ranks" at one rank: run once, report under both names
            print(f"{prefix}: the same run as {twin['point']}")
            results.append({**twin, "point": p["name"]})
            continue
        if args.collect:
            r = collect_point(p, out, warmup)
            results.append(r)
            print(f"{prefix}: " + (f"{r['tokens_per_s']:.0f} tokens/s" if r["status"] == "ok" else r["message"]))
            continue
        r = run_point(p, out, warmup, args.timeout, cores)
        results.append(r)
        if r["status"] == "ok":
            print(f"{prefix}: {r['tokens_per_s']:.0f} tokens/s, step {r['step_ms']:.1f} ms "
                  f"(all-to-all {r['a2a_ms']:.1f}, all-reduce {r['allreduce_ms']:.1f}), {r['wall_s']:.0f} s"
                  + (" [oversubscribed]" if r["oversubscribed"] else ""))
        elif r["status"] == "invalid":
            print(f"{prefix}: not a valid layout, {r['message']}")
        else:
            print(f"{prefix}: FAILED, {r['message']}")
    add_scaling(results, points, scaling)
    extra_axes = [a for a in spec["axes"] if a not in COLUMNS and AXIS_KEYS.get(a, "") not in COLUMNS]
    for r, p in zip(results, points):
        for a in extra_axes:
            r[a] = p["axes"][a]
    csv_path = out / "results.csv"
    write_csv(results, csv_path, extra_axes)
    print(f"sweep: results in {csv_path}")
    if not args.no_plots:
        python = python_with("matplotlib")
        if python is None:
            print("sweep: plots skipped: no python3 with matplotlib found (Debian: apt-get install python3-matplotlib)")
        else:
            subprocess.run([python, str(HERE / "plot.py"), str(csv_path), "--out", str(out)], check=True)
    failed = [r["point"] for r in results if r["status"] in ("failed", "missing")]
    if failed:
        print(f"sweep: {len(failed)} point(s) failed: {', '.join(failed)}; run the sweep again to retry them")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
