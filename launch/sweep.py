#!/usr/bin/python3
"""Run a moerun sweep: every combination of the axes in a sweep file, one mpirun job per point,
collected into DIR/results.csv, then plotted into DIR (launch/plot.py).

    launch/sweep.py SPEC.toml|SPEC.json [--out DIR] [--dry-run] [--rerun] [--collect] [--timeout S]

A sweep can be resumed: points whose DIR/points/<name>/result.json matches the spec are not run
again (--rerun runs them all). Points that failed are retried. The sweep file:

    [sweep]
    scaling = "strong"   # strong: train.global_batch fixed; weak: it is the batch per rank
    warmup = 5           # leading steps left out of the timing (the first step builds caches)
    repeat = 1           # runs per point; the CSV gives the median and the spread
    noise_threshold = 0.2  # a point whose spread exceeds this fraction is flagged noisy
    [base]               # moerun config keys for every point
    "train.steps" = 30
    [axes]               # lists of values; every combination is a point
    ranks = [1, 2]
    ep = ["ranks"]       # "ranks": expert parallelism over all ranks of the point
    [sizes.small]        # named model sizes for a `size` axis (built-in: tiny, small, medium)
    "model.d_model" = 128

Axis names: ranks, ep, experts, top_k, capacity_factor, skew (data.skew), zipf
(bench.router_zipf), policy (balance.policy), size, or any full config key ("model.d_ff").
Before anything runs, the spec is checked: every config key against `moerun --config-reference`
(an unknown key is named, with its close matches), then every point with `moerun --dry-run` at its
rank count (a point moerun refuses is reported as invalid and not run; when every point is
refused, nothing runs). Python 3.11+ standard library; plots need matplotlib (Debian: python3-matplotlib) and are
skipped with a message without it.
"""
import argparse
import csv
import difflib
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
    "point", "label", "status", "ranks", "dp", "ep", "experts", "top_k", "capacity_factor", "skew", "zipf", "policy",
    "d_model", "d_ff", "n_layers", "global_batch", "scaling", "oversubscribed", "timed_steps",
    "tokens_per_s", "tokens_per_s_per_rank", "speedup", "scaling_efficiency", "baseline_point",
    "step_ms", "step_ms_median", "compute_ms", "a2a_ms", "allreduce_ms", "rebalance_ms",
    "imbalance_mean", "imbalance_last", "expert_time_imbalance", "a2a_mib_per_step", "rebalances",
    "final_loss", "peak_device_mib", "peak_rss_mib", "repeats", "tokens_per_s_min", "tokens_per_s_max",
    "tokens_per_s_spread", "step_ms_excess", "noisy", "wall_s", "run_dir", "message",
]
AXIS_COLUMNS_AT = 4  # extra axes' columns go after point, label, status, ranks


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
    unknown = set(sweep) - {"scaling", "warmup", "repeat", "noise_threshold", "ranks"}
    if unknown:
        fail(f"{path}: unknown [sweep] key(s) {sorted(unknown)}; allowed: scaling, warmup, repeat, noise_threshold, ranks")
    if sweep.get("scaling", "strong") not in ("strong", "weak"):
        fail(f"{path}: sweep.scaling = {sweep['scaling']!r} must be \"strong\" or \"weak\"")
    for key, low in (("repeat", 1), ("warmup", 0)):
        if not isinstance(sweep.get(key, low), int) or sweep.get(key, low) < low:
            fail(f"{path}: sweep.{key} = {sweep[key]!r} must be an integer >= {low}")
    if not isinstance(sweep.get("noise_threshold", 0.2), (int, float)) or sweep.get("noise_threshold", 0.2) <= 0:
        fail(f"{path}: sweep.noise_threshold = {sweep['noise_threshold']!r} must be a positive fraction, e.g. 0.2")
    spec["sizes"] = {**BUILTIN_SIZES, **spec.get("sizes", {})}
    for size in axes.get("size", []):
        if size not in spec["sizes"]:
            fail(f"{path}: size '{size}' is not defined; add [sizes.{size}] or use one of {sorted(spec['sizes'])}")
    return spec


def config_reference(binary: pathlib.Path) -> dict[str, str]:
    """Every config key moerun knows, with its type, from `moerun --config-reference`."""
    try:
        p = subprocess.run([str(binary), "--config-reference"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        fail(f"cannot run {binary} --config-reference: {e.strerror}; build first: bash launch/build.sh (or set MOERUN_BIN)")
    if p.returncode != 0:
        fail(f"{binary} --config-reference failed: {p.stderr.strip()}")
    rows = re.findall(r"^\| `([a-z_]+\.[a-z_0-9]+)` \| (\w+) \|", p.stdout, re.MULTILINE)
    if not rows:
        fail(f"{binary} --config-reference printed no keys; is it a moerun binary?")
    return dict(rows)


TYPE_CHECKS = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
               "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
               "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool)}


def check_keys(spec: dict, path: pathlib.Path, reference: dict[str, str]) -> None:
    """Every config key of the spec ([base], [sizes.*] and full-key axes) exists and has the right
    type: a typo is refused here, before any point runs."""
    uses = [(key, value, "[base]") for key, value in spec.get("base", {}).items()]
    for size, keys in spec.get("sizes", {}).items():
        if size in BUILTIN_SIZES and keys is BUILTIN_SIZES[size]:
            continue
        uses += [(key, value, f"[sizes.{size}]") for key, value in keys.items()]
    for name, values in spec["axes"].items():
        if name not in ("ranks", "size"):
            key = AXIS_KEYS.get(name, name)
            uses += [(key, value, f"axis '{name}'") for value in values if value != "ranks"]
    problems = []
    for key, value, where in uses:
        if key not in reference:
            close = difflib.get_close_matches(key, reference, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else "; moerun --config-reference lists the keys"
            problems.append(f"{where}: unknown config key '{key}'{hint}")
        elif not TYPE_CHECKS.get(reference[key], lambda v: True)(value):
            article = "an" if reference[key][0] in "aeiou" else "a"
            problems.append(f"{where}: {key} = {value!r} is not {article} {reference[key]} (moerun --config-reference)")
    if problems:
        fail(f"{path}: nothing was run:\n  " + "\n  ".join(dict.fromkeys(problems)))


def preflight(points: list[dict], binary: pathlib.Path, cores: int) -> dict[str, str]:
    """moerun --dry-run for every point at its rank count: the points moerun refuses, with its reason."""
    from concurrent.futures import ThreadPoolExecutor

    def refusal(point: dict) -> str | None:
        cmd = [str(binary), "--dry-run", "--world-size", str(point["ranks"])]
        for key, value in point["settings"].items():
            cmd += ["--set", f"{key}={toml_value(value)}"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if p.returncode == 0:
            return None
        lines = [l for l in (p.stderr + p.stdout).splitlines() if "error" in l]
        return re.sub(r"^\[rank \d+\] ", "", lines[0]) if lines else f"moerun --dry-run exit code {p.returncode}"

    with ThreadPoolExecutor(max_workers=max(1, cores)) as pool:
        reasons = list(pool.map(refusal, points))
    return {p["name"]: why for p, why in zip(points, reasons) if why is not None}


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
        label = "/".join(str(v) for v in axis_values.values())
        point = {"name": slug(axis_values), "label": label, "axes": axis_values, "ranks": ranks, "settings": settings,
                 "repeat": int(spec["sweep"].get("repeat", 1))}
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
        "step_ms_excess": mean("step_ms") / statistics.median(r["step_ms"] for r in timed) - 1.0,
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


def run_dirs(point: dict, out: pathlib.Path) -> list[pathlib.Path]:
    """One run directory per repeat: run, run-2, run-3, ..."""
    point_dir = out / "points" / point["name"]
    return [point_dir / ("run" if r == 1 else f"run-{r}") for r in range(1, point["repeat"] + 1)]


def run_moerun(cmd: list[str], log_path: pathlib.Path, timeout: float) -> int | None:
    """Runs one moerun job with its output in log_path: its exit code, or None after a timeout."""
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


def failure_reason(log_path: pathlib.Path, code: int | None, timeout: float) -> tuple[str, bool]:
    """The line of the log that says why a run failed, and whether moerun refused its config."""
    lines = [l for l in log_path.read_text(errors="replace").splitlines() if "error" in l.lower()]
    # moerun's own message first: Open MPI's abort banner ("with errorcode 1.") may come before it.
    lines = [l for l in lines if "moerun" in l] + [l for l in lines if "moerun" not in l]
    why = "timed out after %.0f s" % timeout if code is None else (lines[0] if lines else f"exit code {code}")
    return why, code is not None and any("moerun config error" in l for l in lines)


def combine(summaries: list[dict], threshold: float) -> dict:
    """One point's figures over its repeats: the median of each, the spread of the throughput, and
    a flag when the repeats disagree or slow outlier steps raised a run's mean step time."""
    combined = dict(summaries[0])
    for key, value in summaries[0].items():
        if isinstance(value, float):
            combined[key] = statistics.median(s[key] for s in summaries)
    tps = [s["tokens_per_s"] for s in summaries]
    spread = (max(tps) - min(tps)) / statistics.median(tps) if len(tps) > 1 else None
    excess = max(s["step_ms_excess"] for s in summaries)
    combined.update(repeats=len(summaries), tokens_per_s_min=min(tps), tokens_per_s_max=max(tps),
                    tokens_per_s_spread="" if spread is None else spread, step_ms_excess=excess)
    reasons = []
    if spread is not None and spread > threshold:
        reasons.append(f"repeats differ by {spread:.0%} of the median throughput")
    if excess > threshold:
        reasons.append(f"outlier steps raise the mean step time {excess:.0%} above the median")
    combined["noisy"] = bool(reasons)
    combined["noise"] = "; ".join(reasons)
    return combined


def record_figures(result: dict, summaries: list[dict], threshold: float, note: str) -> None:
    result.update(combine(summaries, threshold))
    notes = [n for n in (note, ("noisy: " + result.pop("noise")) if result["noisy"] else result.pop("noise")) if n]
    result.update(status="ok", message="; ".join(notes))


def run_point(point: dict, out: pathlib.Path, warmup: int, timeout: float, cores: int, threshold: float) -> dict:
    point_dir = out / "points" / point["name"]
    point_dir.mkdir(parents=True, exist_ok=True)
    oversubscribed = point["ranks"] > cores
    result = {"point": point["name"], "label": point["label"], "ranks": point["ranks"],
              "oversubscribed": oversubscribed, "run_dir": str(run_dirs(point, out)[0].relative_to(out)),
              "spec": spec_key(point)}
    start = time.monotonic()
    summaries = []
    for r, run_dir in enumerate(run_dirs(point, out), 1):
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a partial run of an earlier attempt
        log_path = point_dir / ("log.txt" if r == 1 else f"log-{r}.txt")
        code = run_moerun(moerun_command(point, run_dir, oversubscribed), log_path, timeout)
        if code != 0:
            why, invalid = failure_reason(log_path, code, timeout)
            # moerun refuses a layout that does not fit before it starts: not a failure of the sweep.
            result.update(status="invalid" if invalid else "failed", message=f"{why} (log: {log_path.relative_to(out)})")
            for column, key in AXIS_KEYS.items():  # what the point asked for, since no run reports it
                if key in point["settings"]:
                    result[column] = point["settings"][key]
            break
        try:
            summaries.append(summarize(run_dir, warmup, point["ranks"]))
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            result.update(status="failed", message=f"the run finished but its files cannot be read: {e!r}")
            break
    else:
        record_figures(result, summaries, threshold, "oversubscribed: timing meaningless" if oversubscribed else "")
    result["wall_s"] = time.monotonic() - start
    (point_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def collect_point(point: dict, out: pathlib.Path, warmup: int, threshold: float) -> dict:
    dirs = run_dirs(point, out)
    result = {"point": point["name"], "label": point["label"], "ranks": point["ranks"], "oversubscribed": False,
              "wall_s": "", "run_dir": str(dirs[0].relative_to(out)), "spec": spec_key(point), "status": "missing"}
    summaries = []
    for run_dir in dirs:
        try:
            summaries.append(summarize(run_dir, warmup, point["ranks"]))
        except (OSError, RuntimeError, KeyError, ValueError):
            result["message"] = f"no finished run in {run_dir}"
            return result
    record_figures(result, summaries, threshold, "collected")
    return result


def invalid_point(point: dict, why: str) -> dict:
    """A point moerun --dry-run refused: reported, never run."""
    result = {"point": point["name"], "label": point["label"], "ranks": point["ranks"], "oversubscribed": False,
              "wall_s": "", "run_dir": "", "spec": spec_key(point), "status": "invalid", "message": why}
    for column, key in AXIS_KEYS.items():
        if key in point["settings"]:
            result[column] = point["settings"][key]
    return result


def spec_key(point: dict) -> dict:
    return {"ranks": point["ranks"], "settings": point["settings"], "repeat": point["repeat"]}


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
    columns = COLUMNS[:AXIS_COLUMNS_AT] + extra_axes + COLUMNS[AXIS_COLUMNS_AT:]
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
    threshold = float(spec["sweep"].get("noise_threshold", 0.2))
    scaling = spec["sweep"].get("scaling", "strong")
    cores = usable_cores()
    binary = pathlib.Path(os.environ.get("MOERUN_BIN", ROOT / "build/release/bin/moerun"))
    if binary.exists():
        check_keys(spec, args.spec, config_reference(binary))
    elif not args.collect:
        fail(f"{binary} not found; build first: bash launch/build.sh (or set MOERUN_BIN)")
    if args.dry_run:
        for p in points:
            print(f"{p['name']}: " + " ".join(moerun_command(p, run_dirs(p, out)[0], p["ranks"] > cores)))
        return 0
    refused = {} if args.collect else preflight(points, binary, cores)
    if points and len(refused) == len(points):
        reasons = sorted(set(refused.values()))
        fail(f"moerun refuses every point of {args.spec}, so nothing was run:\n  " + "\n  ".join(reasons[:5])
             + ("\n  ..." if len(reasons) > 5 else ""))
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.spec, out / ("spec" + args.spec.suffix))
    results = []
    print(f"sweep: {len(points)} point(s), {len(refused)} refused by moerun --dry-run, "
          f"{points[0]['repeat']} run(s) each -> {out} ({cores} core(s); points with more ranks are oversubscribed)")
    for i, p in enumerate(points, 1):
        prefix = f"[{i}/{len(points)}] {p['name']}"
        if p["name"] in refused:
            results.append(invalid_point(p, refused[p["name"]]))
            print(f"{prefix}: not run, {refused[p['name']]}")
            continue
        done = out / "points" / p["name"] / "result.json"
        if done.exists() and not args.rerun:
            previous = json.loads(done.read_text())
            if previous.get("status") in ("ok", "invalid") and previous.get("spec") == spec_key(p):
                print(f"{prefix}: done before, " + (f"{previous['tokens_per_s']:.0f} tokens/s" if previous["status"] == "ok"
                                                     else previous["message"]))
                results.append({**previous, "label": p["label"]})
                continue
        twin = next((r for r in results if r.get("spec") == spec_key(p) and r["status"] != "failed"), None)
        if twin is not None:  # e.g. ep = 1 and ep = "ranks" at one rank: run once, report under both names
            print(f"{prefix}: the same run as {twin['point']}")
            results.append({**twin, "point": p["name"], "label": p["label"]})
            continue
        if args.collect:
            r = collect_point(p, out, warmup, threshold)
            results.append(r)
            print(f"{prefix}: " + (f"{r['tokens_per_s']:.0f} tokens/s" if r["status"] == "ok" else r["message"]))
            continue
        r = run_point(p, out, warmup, args.timeout, cores, threshold)
        results.append(r)
        if r["status"] == "ok":
            print(f"{prefix}: {r['tokens_per_s']:.0f} tokens/s, step {r['step_ms']:.1f} ms "
                  f"(all-to-all {r['a2a_ms']:.1f}, all-reduce {r['allreduce_ms']:.1f}), {r['wall_s']:.0f} s"
                  + (f" [{r['message']}]" if r["message"] else ""))
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
    write_axes(points, out / "axes.json", spec.get("base", {}))
    print(f"sweep: results in {csv_path}")
    noisy = [r["label"] for r in results if r.get("noisy")]
    if noisy:
        print(f"sweep: {len(noisy)} noisy point(s) (spread > {threshold:.0%}; the 'noisy' column and the figures mark "
              f"them; more steps or sweep.repeat help): {', '.join(noisy)}")
    if not args.no_plots:
        plot(csv_path, out, results)
    failed = [r["point"] for r in results if r["status"] in ("failed", "missing")]
    if failed:
        print(f"sweep: {len(failed)} point(s) failed: {', '.join(failed)}; run the sweep again to retry them")
        return 1
    return 0


def write_axes(points: list[dict], path: pathlib.Path, base: dict) -> None:
    """The axes and each point's values on them, for plot.py's panels and colours; and labels.md,
    the table from the short labels the figures use to each point's full setting."""
    axes = list(points[0]["axes"]) if points else []
    path.write_text(json.dumps({"axes": axes, "points": {p["name"]: p["axes"] for p in points}}, indent=1) + "\n")
    lines = [f"Labels in the figures are the values of {' / '.join(axes)}; every point also has the spec's [base].", "",
             "| label | point (run directory under points/) | settings beyond [base] |", "|---|---|---|"]
    for p in points:
        settings = " ".join(f"{k}={toml_value(v)}" for k, v in p["settings"].items() if base.get(k) != v)
        lines.append(f"| `{p['label']}` | {p['name']} | ranks={p['ranks']} {settings} |")
    (path.parent / "labels.md").write_text("\n".join(lines) + "\n")


def plot(csv_path: pathlib.Path, out: pathlib.Path, results: list[dict]) -> None:
    if not any(r["status"] == "ok" for r in results):
        print("sweep: no point finished, so there is nothing to plot")
        return
    python = python_with("matplotlib")
    if python is None:
        print("sweep: plots skipped: no python3 with matplotlib found (Debian: apt-get install python3-matplotlib)")
        return
    p = subprocess.run([python, str(HERE / "plot.py"), str(csv_path), "--out", str(out)])
    if p.returncode != 0:
        print(f"sweep: plot.py failed (exit {p.returncode}); results.csv is complete, the figures are not")


if __name__ == "__main__":
    sys.exit(main())
