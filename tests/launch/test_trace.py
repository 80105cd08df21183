"""log.trace end to end: a 2-rank run with expert parallelism, a rebalance and a checkpoint
writes one Chrome trace per rank; launch/merge_traces.py joins them; the merged file has one
process per rank, every kind of span the docs promise, spans nested inside their step, and
every all-reduce bucket that began also ended.

    test_trace.py <repository root> <mpirun command...> -- <moerun binary> <work directory>
"""
import collections
import json
import pathlib
import shutil
import subprocess
import sys

root = pathlib.Path(sys.argv[1])
split = sys.argv.index("--")
mpirun, (moerun, work) = sys.argv[2:split], sys.argv[split + 1:]
work = pathlib.Path(work)
shutil.rmtree(work, ignore_errors=True)


def check(condition, message):
    if not condition:
        sys.exit(f"FAIL: {message}")


cmd = mpirun + [moerun, "--run-dir", str(work), "--set", "log.trace=true", "--set", "parallel.ep=2",
                "--set", "train.steps=4", "--set", "model.d_model=64", "--set", "model.d_ff=128",
                "--set", "model.n_layers=2", "--set", "eval.examples=2", "--set", "eval.heldout_batches=1",
                "--set", "balance.policy=replicate", "--set", "balance.interval=2", "--set", "balance.force=true",
                "--set", "checkpoint.every=2", "--set", "parallel.bucket_mb=0.01"]
p = subprocess.run(cmd, capture_output=True, text=True)
print(p.stdout[-2000:], p.stderr[-2000:])
check(p.returncode == 0, "moerun failed")
p = subprocess.run([sys.executable, str(root / "launch/merge_traces.py"), str(work)], capture_output=True, text=True)
print(p.stdout, p.stderr)
check(p.returncode == 0, "merge_traces failed")
events = json.loads((work / "trace.json").read_text())["traceEvents"]

names = {(e["pid"], e["args"]["name"]) for e in events if e["ph"] == "M" and e["name"] == "process_name"}
check(names == {(0, "rank 0"), (1, "rank 1")}, f"process rows: {names}")
spans = [e for e in events if e["ph"] == "X"]
for rank in (0, 1):
    mine = [e for e in spans if e["pid"] == rank]
    cats = collections.Counter(e["cat"] for e in mine)
    for cat in ("step", "forward", "backward", "experts", "all-to-all", "optimizer", "rebalance", "checkpoint", "eval"):
        check(cats[cat] > 0, f"rank {rank}: no '{cat}' span ({dict(cats)})")
    span_names = {e["name"] for e in mine}
    for name in ("forward 0", "forward 1", "backward 0", "backward 1", "dispatch", "combine", "migrate experts",
                 "step 1", "step 4", "all-reduce wait"):
        check(name in span_names, f"rank {rank}: no span '{name}'")
    # Every forward and backward of a training step lies inside that step's span.
    steps = [e for e in mine if e["name"].startswith("step ")]
    check(len(steps) == 4, f"rank {rank}: {len(steps)} step spans")
    for s in steps:
        inner = [e for e in mine if e["cat"] == "backward" and s["ts"] <= e["ts"] <= s["ts"] + s["dur"]]
        check(all(e["ts"] + e["dur"] <= s["ts"] + s["dur"] + 1e-3 for e in inner) and len(inner) >= 2,
              f"rank {rank}: backward spans not nested in {s['name']}")
    # Buckets in flight: every begin has its end, later.
    begins = {(e["id"], i): e for i, e in enumerate(x for x in events if x["ph"] == "b" and x["pid"] == rank)}
    ends = [e for e in events if e["ph"] == "e" and e["pid"] == rank]
    check(len(begins) > 0 and len(begins) == len(ends), f"rank {rank}: {len(begins)} bucket begins, {len(ends)} ends")
    check(all(b.get("args", {}).get("bytes", 0) > 0 for b in begins.values()), "a bucket without its size")
# One time axis: the ranks exchange tokens inside every step, so each step's spans on the two
# ranks overlap in time. (Not "start within N ms": under a loaded CI machine one rank can be
# descheduled between steps for longer than any fixed bound.)
for n in range(1, 5):
    a, b = ([e for e in spans if e["pid"] == r and e["name"] == f"step {n}"][0] for r in (0, 1))
    check(a["ts"] < b["ts"] + b["dur"] and b["ts"] < a["ts"] + a["dur"],
          f"step {n}: rank 0 at {a['ts']}+{a['dur']} us, rank 1 at {b['ts']}+{b['dur']} us do not overlap: clocks not aligned")
print("trace test OK")
