"""bench/placement_ceiling.py on a run directory it can be checked against by hand: two ranks,
eight experts, four slots each, experts 0 and 1 hot (400 copies a step, the others 100).

Static layout: rank 0 runs 1000 copies, rank 1 400; at 1 ms a copy and 0.1 s fixed a step is
1.1 s. Experts {0, 2, 3, 4} on rank 0 split every step 700 : 700, as forced-balanced routing
does: 0.8 s. A run that moved there at step 2 holds the static layout for steps 1-2 and the
balanced one for 3-4: 0.95 s on average. The exchange (1 byte a copy at 1 GB/s) adds under a
millisecond. Bad input names the file and the fix.

    test_placement_ceiling.py <repository root> <work directory>
"""
import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

root, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
python = sys.executable  # CMake's choice: Debian's /usr/bin/python3 first, the one with h5py
try:
    import h5py  # noqa: F401
    import numpy  # noqa: F401
except ImportError:
    print(f"SKIP: {python} cannot import h5py and numpy (apt-get install python3-h5py python3-numpy)")
    sys.exit(0)
shutil.rmtree(work, ignore_errors=True)
work.mkdir(parents=True)


def check(condition, message):
    if not condition:
        sys.exit(f"FAIL: {message}")


def placement(ranks):
    return [[{"rank": r, "share": 1}] for r in ranks]


static = [0, 0, 0, 0, 1, 1, 1, 1]
balanced = [0, 1, 0, 0, 0, 1, 1, 1]
cost = {"seconds_per_copy": 1e-3, "seconds_per_held_expert": 0.0, "bytes_per_copy": 1.0, "bandwidth": 1e9,
        "replica_grad_bytes": 0.0, "reduce_bandwidth": 1e9, "fixed_seconds": 0.1}
run = work / "run"
run.mkdir()
(run / "config.json").write_text(json.dumps({"parallel": {"ep": 2}}))
with (run / "metrics.jsonl").open("w") as f:
    for step in range(1, 5):
        f.write(json.dumps({"step": step, "expert_counts": [[400, 400, 100, 100, 100, 100, 100, 100]]}) + "\n")
with (run / "events.jsonl").open("w") as f:
    f.write(json.dumps({"event": "rebalance", "step": 2, "applied": True, "new_placement": [placement(balanced)],
                        "planner_input": {"ep": 2, "current": [placement(static)], "cost": cost,
                                          "max_experts_per_rank": 4}}) + "\n")

tool = root / "bench" / "placement_ceiling.py"
p = subprocess.run([python, str(tool), "--routing", str(run), "--cost", str(run), "--steps", "1", "4", "--window", "2",
                    "--held", str(run)], capture_output=True, text=True)
print(p.stdout, p.stderr)
check(p.returncode == 0, "placement_ceiling failed")
rows = {}
for line in p.stdout.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 3 and cells[1].isdigit():
        rows[cells[0]] = (int(cells[1]), float(cells[2]))
check("70 placements per layer" in p.stdout, "eight experts in four slots each: C(8, 4) = 70 placements")
check(rows.get("static") == (1100, 0.727), f"static: {rows.get('static')}")
for name in ("hindsight", "per window of 2", "per step", "forced-balanced (the bound)"):
    check(rows.get(name) == (800, 1.0), f"{name}: {rows.get(name)}")
check(rows.get(f"held {run}") == (950, 0.842), f"held: {rows.get(f'held {run}')}")

# The model on one layer by hand, with what a run directory cannot show (it assumes equal
# parts per source): expert 0 on both ranks gets 300 copies from rank 0 and 100 from rank 1,
# each kept where it is; expert 1 (rank 1 only) 50 from each. Rank 0 runs 300 copies and holds
# one expert (0.3 + 0.01 s), rank 1 200 and two (0.2 + 0.02); rank 0 sends its 50 copies of
# expert 1 (50 x 1 kB at 1 MB/s: 0.05 s); expert 0's gradient is summed over two replicas
# (2 (2 - 1) / 2 x 1 MB at 1 GB/s: 0.001 s). Split by shares instead of kept local, rank 1
# would run 300 copies.
spec = importlib.util.spec_from_file_location("placement_ceiling", tool)
ceiling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ceiling)
model = ceiling.Model({"seconds_per_copy": 1e-3, "seconds_per_held_expert": 0.01, "bytes_per_copy": 1e3,
                       "bandwidth": 1e6, "replica_grad_bytes": 1e6, "reduce_bandwidth": 1e9, "fixed_seconds": 0.0}, 2)
seconds = model.layer_seconds(((0, 1), (1,)), [[300, 50], [100, 50]])
check(abs(seconds - 0.361) < 1e-12, f"one layer by hand: {seconds} s, expected 0.361")

# Bad input: a cost run without planner inputs, a step range the routing does not hold.
(work / "bare").mkdir()
(work / "bare" / "events.jsonl").write_text(json.dumps({"event": "rebalance", "step": 2, "applied": False}) + "\n")
p = subprocess.run([python, str(tool), "--routing", str(run), "--cost", str(work / "bare"), "--steps", "1", "4"],
                   capture_output=True, text=True)
check(p.returncode != 0 and "log.planner_inputs=true" in p.stderr, f"no planner input: {p.stderr}")
p = subprocess.run([python, str(tool), "--routing", str(run), "--cost", str(run), "--steps", "1", "9"],
                   capture_output=True, text=True)
check(p.returncode != 0 and "holds steps 1-4" in p.stderr, f"steps beyond the routing: {p.stderr}")
print("placement_ceiling: ok")
