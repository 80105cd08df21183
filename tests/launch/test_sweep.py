"""A small sweep end to end: launch/sweep.py runs every point under mpirun (twice: repeat = 2),
writes results.csv with the documented columns, plausible values and the spread over the repeats,
reuses finished points when run again, reports an impossible layout as invalid without running it,
refuses a spec with a typo before anything runs, and (when matplotlib is importable) writes the
PNGs, which launch/plot.py --strict checks for size and overlapping legends.

    test_sweep.py <repository root> <moerun binary> <work directory>
"""
import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

root, moerun, work = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
shutil.rmtree(work, ignore_errors=True)
work.mkdir(parents=True)
env = {**os.environ, "MOERUN_BIN": moerun}
sweep = [sys.executable, str(root / "launch/sweep.py")]

(work / "spec.toml").write_text("""
[sweep]
scaling = "strong"
warmup = 2
repeat = 2
[base]
"train.steps" = 6
"train.global_batch" = 8
"train.micro_batch" = 4
"eval.every" = 0
"eval.examples" = 2
"eval.heldout_batches" = 1
[axes]
ranks = [1, 2]
ep = [1, "ranks"]
size = ["tiny"]
""")
out = work / "out"


def run(*args):
    p = subprocess.run(sweep + list(args), env=env, capture_output=True, text=True)
    print(p.stdout, p.stderr, sep="\n")
    return p


def check(condition, message):
    if not condition:
        sys.exit(f"FAIL: {message}")


p = run(str(work / "spec.toml"), "--out", str(out))
check(p.returncode == 0, f"sweep exited {p.returncode}")
with open(out / "results.csv") as f:
    rows = {r["point"]: r for r in csv.DictReader(f)}
required = ["point", "status", "ranks", "dp", "ep", "experts", "top_k", "capacity_factor", "skew", "policy", "size",
            "d_model", "tokens_per_s", "scaling_efficiency", "speedup", "step_ms", "compute_ms", "a2a_ms",
            "allreduce_ms", "rebalance_ms", "imbalance_mean", "peak_device_mib", "peak_rss_mib", "oversubscribed",
            "final_loss"]
header = list(next(iter(rows.values())).keys())
check(all(c in header for c in required), f"missing columns: {[c for c in required if c not in header]}")
check(set(rows) == {"ranks1-ep1-sizetiny", "ranks1-epranks-sizetiny", "ranks2-ep1-sizetiny", "ranks2-epranks-sizetiny"},
      f"points: {sorted(rows)}")
for name, r in rows.items():
    check(r["status"] == "ok", f"{name}: {r['status']} {r['message']}")
    check(float(r["tokens_per_s"]) > 0 and float(r["step_ms"]) > 0, f"{name}: no throughput")
    check(float(r["peak_device_mib"]) > 0, f"{name}: no peak memory")
    parts = sum(float(r[k]) for k in ("compute_ms", "a2a_ms", "allreduce_ms"))
    check(abs(parts - float(r["step_ms"])) < 1e-3 * float(r["step_ms"]) + 1e-6, f"{name}: the split does not add up")
    check(r["d_model"] == "64", f"{name}: size 'tiny' not applied")
    check(int(r["dp"]) * int(r["ep"]) == int(r["ranks"]), f"{name}: dp x ep != ranks")
check(rows["ranks2-epranks-sizetiny"]["ep"] == "2", "ep = \"ranks\" did not become 2")
# repeat = 2: two runs per point, the median throughput between their extremes, the spread
# computed from them, and a noisy flag that agrees with the spread.
for name, r in rows.items():
    low, high, tps = float(r["tokens_per_s_min"]), float(r["tokens_per_s_max"]), float(r["tokens_per_s"])
    check(r["repeats"] == "2" and low <= tps <= high, f"{name}: repeats {r['repeats']}, {low} <= {tps} <= {high}")
    check(abs(float(r["tokens_per_s_spread"]) - (high - low) / tps) < 1e-4 * max(1.0, (high - low) / tps),
          f"{name}: spread {r['tokens_per_s_spread']} is not (max - min) / median")
    noisy = float(r["tokens_per_s_spread"]) > 0.2 or float(r["step_ms_excess"]) > 0.2
    check(r["noisy"] == str(noisy), f"{name}: noisy = {r['noisy']} but spread {r['tokens_per_s_spread']}")
    check(r["label"] == name.replace("ranks", "", 1).replace("-ep", "/").replace("-size", "/"),
          f"{name}: label {r['label']}")
    check((out / "points" / name / "run-2" / "metrics.jsonl").exists() or "the same run" in p.stdout, f"{name}: no run-2")
check(float(rows["ranks2-epranks-sizetiny"]["a2a_mib_per_step"]) > 0, "expert parallelism sent no all-to-all bytes")
check(float(rows["ranks1-ep1-sizetiny"]["scaling_efficiency"]) == 1.0, "the baseline's efficiency is not 1")
eff = float(rows["ranks2-ep1-sizetiny"]["scaling_efficiency"])
speedup = float(rows["ranks2-ep1-sizetiny"]["speedup"])
check(abs(eff - speedup / 2) < 1e-4, "efficiency != speedup / ranks ratio")
run_dir = out / rows["ranks2-epranks-sizetiny"]["run_dir"]
check((run_dir / "config.json").exists(), "the run directory has no config.json")
check(json.loads((run_dir / "config.json").read_text())["parallel"]["ep"] == 2, "config.json does not say ep 2")
check("the same run as ranks1-ep1-sizetiny" in p.stdout, "ep = 1 and ep = ranks at one rank were run twice")

pngs = ["throughput_vs_ranks.png", "step_breakdown.png", "loss_curves.png"]
has_matplotlib = "plots skipped" not in p.stdout
if has_matplotlib:
    for png in pngs:
        check((out / png).stat().st_size > 1000, f"{png} missing or empty")
    check((run_dir.parent / "expert_load.png").exists() and (run_dir.parent / "imbalance.png").exists(),
          "the per-run figures are missing")
    python = next(c for c in (sys.executable, "/usr/bin/python3")
                  if subprocess.run([c, "-c", "import matplotlib"], capture_output=True).returncode == 0)
    strict = subprocess.run([python, str(root / "launch/plot.py"), str(out / "results.csv"), "--strict"],
                            capture_output=True, text=True)
    check(strict.returncode == 0, f"the sweep's figures have layout problems: {strict.stderr}")
else:
    print("SKIP plot checks: no python3 with matplotlib on this machine (apt-get install python3-matplotlib)")

# Resumable: a second invocation runs nothing.
stamp = (out / "points/ranks2-ep1-sizetiny/result.json").stat().st_mtime_ns
p = run(str(work / "spec.toml"), "--out", str(out), "--no-plots")
check(p.returncode == 0 and p.stdout.count("done before") == 3, "finished points were not reused")
check((out / "points/ranks2-ep1-sizetiny/result.json").stat().st_mtime_ns == stamp, "a finished point ran again")

# --collect: run directories filled elsewhere (one cluster job per point) are summarized, not run.
shutil.copytree(out / "points", work / "collected/points")
for f in (work / "collected/points").glob("*/result.json"):
    f.unlink()
shutil.rmtree(work / "collected/points/ranks1-ep1-sizetiny/run")
p = run(str(work / "spec.toml"), "--out", str(work / "collected"), "--collect", "--no-plots")
with open(work / "collected/results.csv") as f:
    collected = {r["point"]: r for r in csv.DictReader(f)}
check(collected["ranks2-ep1-sizetiny"]["tokens_per_s"] == rows["ranks2-ep1-sizetiny"]["tokens_per_s"],
      "--collect gave other figures than the sweep")
check(collected["ranks1-ep1-sizetiny"]["status"] == "missing" and p.returncode != 0,
      "--collect did not report a point without a finished run")

# A layout moerun refuses is reported as invalid, with moerun's message, and never run; JSON specs work.
(work / "bad.json").write_text(json.dumps({"base": {"train.steps": 2, "model.d_model": 32, "model.d_ff": 64},
                                           "axes": {"ranks": [2], "ep": ["ranks"], "experts": [3, 4]}}))
p = run(str(work / "bad.json"), "--out", str(work / "bad"), "--no-plots")
check(p.returncode == 0, "an invalid layout failed the sweep")
with open(work / "bad/results.csv") as f:
    bad = {r["experts"]: r for r in csv.DictReader(f)}
check(bad["3"]["status"] == "invalid" and "not divisible by parallel.ep" in bad["3"]["message"], f"invalid point: {bad['3']}")
check(not (work / "bad/points/ranks2-epranks-experts3").exists(), "the refused point was run")
check(bad["4"]["status"] == "ok", f"the valid point beside it: {bad['4']}")

# A typo in [base] or a value of the wrong type is refused before anything runs, naming the key
# and its close matches; so is a sweep whose every point moerun refuses.
(work / "typo.toml").write_text('[base]\n"train.step" = 6\n"model.experts" = "8"\n[axes]\nranks = [1]\n')
p = run(str(work / "typo.toml"), "--out", str(work / "typo"))
check(p.returncode != 0 and "unknown config key 'train.step'; did you mean train.steps" in p.stderr
      and "model.experts = '8' is not an integer" in p.stderr, "a typo was not refused clearly")
check(not (work / "typo").exists(), "a spec with a typo started running")
(work / "refused.toml").write_text('[axes]\nranks = [1]\npolicy = ["atuo"]\n')
p = run(str(work / "refused.toml"), "--out", str(work / "refused"))
check(p.returncode != 0 and "refuses every point" in p.stderr and "'atuo' is not one of" in p.stderr,
      "a spec whose every point is refused was not stopped")
check("Traceback" not in p.stderr, "a traceback")

# A malformed sweep file is refused with a message naming the problem.
(work / "broken.toml").write_text("[axes]\nranks = 2\n")
p = run(str(work / "broken.toml"), "--out", str(work / "broken"))
check(p.returncode != 0 and "axis 'ranks' must be a non-empty list" in p.stderr, "malformed spec not refused clearly")
print("sweep test OK")
