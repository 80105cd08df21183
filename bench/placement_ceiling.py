#!/usr/bin/python3
"""How close can any placement get to the forced-balanced bound on a recorded routing? Hindsight
ceilings by the planner's own cost model, for small expert-parallel groups.

  bench/placement_ceiling.py --routing sim/traces/zipf1.2-medium-np2-80steps.h5 \\
      --cost runs/bs-s0-seeds/seed1234/zipf0.0_auto --steps 41 80 [--window 10] \\
      [--held runs/bs-80s/zipf1.2_auto_r0 ...]

The routing (log.routing_trace: copies per step, layer, source rank and expert) does not depend
on the placement, so every placement can be judged on it. (Within a few ulps: a run that changed
its placement sums gradients in another order, and its routing drifts from the same seed's
under none after some tens of steps. --routing RUN reads a run's own copies per expert from its
metrics.jsonl instead, every source assumed to send an equal part, as the planner assumes.) --cost names a run with
log.planner_inputs = true: its first rebalance decision's cost model (seconds per copy, per held
expert, exchange and replica-reduce rates, the fixed rest of the step) and slot budget are the
ones used, the same terms as parallel/planner.h (predict). Over the chosen steps it reports the
mean predicted step time and its fraction of the forced-balanced bound for:

  static      the layout policy none keeps (expert e on ep rank e / (experts / ep))
  hindsight   the one placement that is best over all of the steps, chosen knowing them
  per window  the best placement for each --window steps, chosen knowing them, moved for free
  per step    the best placement for every step: what no placement chosen in advance can beat
  held RUN    the placements a run applied (its events.jsonl), step by step, on this routing

Every placement is tried (each expert on one or more ranks, shares equal, within the slot
budget), so the group must be small: at most 10^5 placements per layer. Needs h5py and numpy
(Debian's python3-h5py, python3-numpy: /usr/bin/python3).
"""
import argparse
import itertools
import json
import pathlib
import sys

try:
    import h5py
    import numpy as np
except ImportError as e:
    sys.exit(f"placement_ceiling: {e.name} is missing; run with /usr/bin/python3 (Debian's python3-h5py, python3-numpy)")


def fail(message):
    sys.exit(f"placement_ceiling: {message}")


def first_planner_input(run_dir):
    path = pathlib.Path(run_dir) / "events.jsonl"
    if not path.exists():
        fail(f"{path} does not exist: --cost needs a run directory")
    for line in path.open():
        event = json.loads(line)
        if event.get("event") == "rebalance" and "planner_input" in event:
            return event["planner_input"]
    fail(f"{path} has no rebalance decision with a planner input: run it with log.planner_inputs=true "
         "and a balance.policy other than none")


def ring_wire(grad_bytes, k):
    return 0.0 if k <= 1 else 2.0 * (k - 1) / k * grad_bytes


class Model:
    """predict() of parallel/planner.cpp for one layer and one step, on per-source copies."""

    def __init__(self, cost, ep):
        self.spc = cost["seconds_per_copy"]
        self.held = cost.get("seconds_per_held_expert", 0.0)
        self.bytes_per_copy = cost["bytes_per_copy"]
        self.bandwidth = cost["bandwidth"]
        self.grad_bytes = cost.get("replica_grad_bytes", 0.0)
        self.reduce_bandwidth = cost.get("reduce_bandwidth", 1e9)
        self.fixed = cost["fixed_seconds"]
        self.ep = ep

    def layer_seconds(self, holders, routed):
        """holders[e]: the ranks holding expert e; routed[source][e]: copies from each source."""
        ep = self.ep
        load = [0.0] * ep
        held = [0] * ep
        sent = [0.0] * ep
        received = [0.0] * ep
        wire = [0.0] * ep
        for e, ranks in enumerate(holders):
            for r in ranks:
                held[r] += 1
                wire[r] += ring_wire(self.grad_bytes, len(ranks))
            for source in range(ep):
                copies = float(routed[source][e])
                if source in ranks:  # a local replica keeps the source's copies
                    load[source] += copies
                    continue
                for r in ranks:  # equal shares over the replicas
                    load[r] += copies / len(ranks)
                    received[r] += copies / len(ranks)
                sent[source] += copies
        compute = max(load[r] * self.spc + held[r] * self.held for r in range(ep))
        exchange = max(max(sent), max(received)) * self.bytes_per_copy / self.bandwidth
        reduce = max(wire) / self.reduce_bandwidth
        return compute + exchange + reduce


def all_placements(experts, ep, slots):
    subsets = [s for n in range(1, ep + 1) for s in itertools.combinations(range(ep), n)]
    count = len(subsets) ** experts
    if count > 100_000:
        fail(f"{count} placements per layer ({len(subsets)}^{experts}) are too many to try: this tool is for "
             "small groups (ep 2 with up to 10 experts)")
    out = []
    for choice in itertools.product(subsets, repeat=experts):
        used = [0] * ep
        for ranks in choice:
            for r in ranks:
                used[r] += 1
        if max(used) <= slots:
            out.append(choice)
    return out


def read_routing(path):
    """([step][layer][source][expert] copies, steps, ep) from a trace or a run's metrics.jsonl."""
    path = pathlib.Path(path)
    if path.is_dir():  # a run: copies per expert, every source assumed to send an equal part
        metrics = path / "metrics.jsonl"
        config = path / "config.json"
        if not metrics.exists() or not config.exists():
            fail(f"{path} has no metrics.jsonl and config.json: --routing takes a trace or a run directory")
        ep = int(json.load(config.open())["parallel"]["ep"])
        records = [json.loads(line) for line in metrics.open()]
        records = [r for r in records if "expert_counts" in r]
        if not records:
            fail(f"{metrics} has no expert_counts")
        counts = np.array([r["expert_counts"] for r in records], dtype=float)  # [step][layer][expert]
        routed = np.repeat(counts[:, :, None, :] / ep, ep, axis=2)
        return routed, [int(r["step"]) for r in records], ep
    try:
        trace = h5py.File(path, "r")
        return trace["routed"][:], [int(s) for s in trace["step"][:]], int(trace.attrs["ep"])
    except (OSError, KeyError) as e:
        fail(f"{path} is not a readable routing trace ({e}); write one with log.routing_trace=true")


def held_placements(run_dir, layers, first_step, last_step, static):
    """[step][layer] holders, as the run applied them (a change at step s serves steps s+1 on)."""
    path = pathlib.Path(run_dir) / "events.jsonl"
    if not path.exists():
        fail(f"{path} does not exist: --held needs a run directory")
    changes = {}
    for line in path.open():
        event = json.loads(line)
        if event.get("event") == "rebalance" and event.get("applied"):
            changes[event["step"]] = [tuple(tuple(r["rank"] for r in expert) for expert in layer)
                                      for layer in event["new_placement"]]
    current = [static] * layers
    per_step = {}
    for step in range(1, last_step + 1):
        if step >= first_step:
            per_step[step] = current
        if step in changes:
            if len(changes[step]) != layers:
                fail(f"{path}: the placement at step {step} has {len(changes[step])} layers, the trace {layers}")
            current = changes[step]
    return per_step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routing", required=True,
                    help="a routing trace (log.routing_trace), or a run directory: its metrics.jsonl copies per expert")
    ap.add_argument("--cost", required=True, help="a run directory with log.planner_inputs=true")
    ap.add_argument("--steps", type=int, nargs=2, metavar=("FIRST", "LAST"), required=True)
    ap.add_argument("--window", type=int, default=10, help="steps per placement for the per-window ceiling")
    ap.add_argument("--held", nargs="*", default=[], help="run directories whose applied placements to judge")
    args = ap.parse_args()

    routed, steps, ep = read_routing(args.routing)
    _, layers, sources, experts = routed.shape
    if sources != ep:
        fail(f"{args.routing}: routed has {sources} sources for ep {ep}; traces with dp > 1 are not supported here")
    first, last = args.steps
    missing = [s for s in range(first, last + 1) if s not in steps]
    if first > last or missing:
        fail(f"--steps {first} {last}: the trace holds steps {steps[0]}-{steps[-1]}")
    index = {s: i for i, s in enumerate(steps)}
    chosen = list(range(first, last + 1))

    planner_input = first_planner_input(args.cost)
    if int(planner_input["ep"]) != ep or len(planner_input["current"]) != layers:
        fail(f"{args.cost} planned for ep {planner_input['ep']} and {len(planner_input['current'])} layers; "
             f"the trace has ep {ep} and {layers}")
    model = Model(planner_input["cost"], ep)
    slots = int(planner_input["max_experts_per_rank"])
    static = tuple((e // (experts // ep),) for e in range(experts))
    placements = all_placements(experts, ep, slots)

    # seconds[p][layer][step index in `chosen`] for every placement: the table all ceilings read
    table = np.array([[[model.layer_seconds(p, routed[index[s], layer]) for s in chosen] for layer in range(layers)]
                      for p in placements])
    static_i = placements.index(static)

    def step_time(per_layer_mean):
        return model.fixed + float(np.sum(per_layer_mean))

    rows = [("static", step_time(table[static_i].mean(axis=1)))]
    rows.append(("hindsight", step_time(table.mean(axis=2).min(axis=0))))
    windows = [range(a, min(a + args.window, len(chosen))) for a in range(0, len(chosen), args.window)]
    per_window = sum(table[:, :, list(w)].sum(axis=2).min(axis=0) for w in windows) / len(chosen)
    rows.append((f"per window of {args.window}", step_time(per_window)))
    rows.append(("per step", step_time(table.min(axis=0).mean(axis=1))))
    for run in args.held:
        held = held_placements(run, layers, first, last, static)
        per_layer = np.zeros(layers)
        for s in chosen:
            for layer in range(layers):
                per_layer[layer] += model.layer_seconds(held[s][layer], routed[index[s], layer]) / len(chosen)
        rows.append((f"held {run}", step_time(per_layer)))

    total = routed.sum(axis=(2, 3))[[index[s] for s in chosen]].mean(axis=0)  # copies per layer per step
    balanced_routed = lambda layer: np.full((ep, experts), total[layer] / (ep * experts))  # noqa: E731
    bound = step_time([model.layer_seconds(static, balanced_routed(layer)) for layer in range(layers)])
    print(f"steps {first}-{last} of {args.routing}; cost model from {args.cost}; "
          f"{len(placements)} placements per layer within {slots} slots")
    print("| placement | predicted step ms | of the bound |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {1000 * seconds:.0f} | {bound / seconds:.3f} |")
    print(f"| forced-balanced (the bound) | {1000 * bound:.0f} | 1.000 |")


if __name__ == "__main__":
    main()
