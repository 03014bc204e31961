"""Where the wall-clock time of a traced run goes, by jitted function and by kind of XLA op.

`jax.profiler` records every XLA:CPU op as a trace event (`args.hlo_module`, `args.hlo_op`). Ops overlap on
the host's threads, so summing their durations over-counts; `wall_breakdown` sweeps the timeline instead and
shares each instant equally among the ops running then. Instants with no op running count as idle.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os

# first match wins: a fused matmul ("ynn_fusion", "dot") before the copies and slices it may contain
KINDS = (("matmul", ("ynn_fusion", "dot", "onednn", "xnn_fusion")), ("weight or cache slice", ("dynamic-slice",)),
         ("in-place update", ("update-slice",)), ("zero fill", ("broadcast",)), ("copy or transpose", ("copy", "transpose")))


def op_kind(op: str) -> str:
    return next((kind for kind, marks in KINDS if any(m in op for m in marks)), "other")


def xla_op_events(trace_dir: str) -> list[tuple[str, str, float, float]]:
    """(module, op, start_us, duration_us) of every XLA op in the newest trace under `trace_dir`."""
    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True), key=os.path.getmtime)
    if not files:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}: was jax.profiler tracing on?")
    with gzip.open(files[-1]) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    return [(e["args"]["hlo_module"], e["args"]["hlo_op"], e["ts"], e["dur"]) for e in events
            if e.get("ph") == "X" and "hlo_op" in e.get("args", {})]


def wall_breakdown(events) -> dict:
    """{"wall_ms", "idle_ms", "by_module": {module: ms}, "by_kind": {kind: ms}} from `xla_op_events`."""
    edges = sorted([(t, 1, i) for i, (_, _, t, _) in enumerate(events)] +
                   [(t + d, -1, i) for i, (_, _, t, d) in enumerate(events)], key=lambda e: (e[0], e[1]))
    share, idle = collections.Counter(), 0.0
    active, last = set(), edges[0][0] if edges else 0.0
    for t, step, i in edges:
        for j in active:
            share[j] += (t - last) / len(active)
        if not active:
            idle += t - last
        if step > 0:
            active.add(i)
        else:
            active.discard(i)
        last = t
    by_module, by_kind = collections.Counter(), collections.Counter()
    for i, us in share.items():
        module, op = events[i][0], events[i][1]
        by_module[module] += us / 1e3
        by_kind[op_kind(op)] += us / 1e3
    wall = (edges[-1][0] - edges[0][0]) / 1e3 if edges else 0.0
    rounded = lambda c: {k: round(v, 1) for k, v in c.most_common()}
    return {"wall_ms": round(wall, 1), "idle_ms": round(idle / 1e3, 1), "by_module": rounded(by_module),
            "by_kind": rounded(by_kind)}
