#!/usr/bin/python3
"""Merge the per-rank timelines of a run (written with --set log.trace=true) into one
Chrome trace-event file that Perfetto (https://ui.perfetto.dev) or chrome://tracing opens
with one row per rank.

    launch/merge_traces.py RUN_DIR [-o OUT]     # default OUT: RUN_DIR/trace.json

Every rank starts its clock right after a common barrier, so the ranks share one time axis
(to within the barrier's skew). Python 3 standard library only.
"""
import argparse
import json
import pathlib
import re
import sys


def merge(run_dir: pathlib.Path) -> dict:
    trace_dir = run_dir / "trace"
    files = sorted(trace_dir.glob("rank_*.json"), key=lambda p: int(re.findall(r"\d+", p.stem)[0]))
    if not files:
        sys.exit(f"merge_traces: no {trace_dir}/rank_*.json; run moerun with --set log.trace=true "
                 f"--run-dir {run_dir} first")
    events, dropped, ranks = [], 0, []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            sys.exit(f"merge_traces: {path} is not valid JSON ({e}); the rank probably died while writing it")
        events.extend(data["traceEvents"])
        dropped += data.get("otherData", {}).get("dropped_events", 0)
        ranks.append(data.get("otherData", {}).get("rank"))
    missing = sorted(set(range(max(ranks) + 1)) - set(ranks))
    if missing:
        print(f"merge_traces: warning: no trace from rank(s) {missing}", file=sys.stderr)
    if dropped:
        print(f"merge_traces: warning: {dropped} event(s) were over the per-rank cap and are missing", file=sys.stderr)
    return {"displayTimeUnit": "ms", "otherData": {"ranks": ranks, "dropped_events": dropped}, "traceEvents": events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=pathlib.Path, help="a moerun run directory (holds trace/rank_<r>.json)")
    parser.add_argument("-o", "--out", type=pathlib.Path, help="output file (default RUN_DIR/trace.json)")
    args = parser.parse_args()
    merged = merge(args.run_dir)
    out = args.out or args.run_dir / "trace.json"
    out.write_text(json.dumps(merged))
    print(f"merge_traces: {len(merged['otherData']['ranks'])} rank(s), {len(merged['traceEvents'])} events -> {out} "
          f"(open in https://ui.perfetto.dev)")


if __name__ == "__main__":
    main()
