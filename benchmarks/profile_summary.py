"""Per-kernel times from a jax.profiler trace, without TensorBoard: where a jitted step's device time goes.

`summarize(trace_dir, calls)` reads the trace's .xplane.pb with jax's own ProfileData reader and groups the
events of each device line (on a GPU: one line per CUDA stream with its kernels, plus XLA's op and module
lines) by name: total milliseconds per call, count per call, share of the line. On a machine without a GPU
the device planes are missing and it reports XLA's host threads instead (the CPU backend's ops).

    python benchmarks/profile_summary.py TRACE_DIR [--calls N]     # prints the summary as JSON
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os


def _stats(event) -> dict:
    """A few short string stats of an event (on a GPU kernel: the HLO op / module it runs), best effort."""
    out = {}
    try:
        for k, v in event.stats:
            if isinstance(v, str) and v and len(out) < 6:
                out[str(k)] = v[:120]
    except Exception:  # noqa: BLE001  the stats API differs between jax versions
        pass
    return out


def _lines(pd) -> list[tuple[str, str, list]]:
    """(plane, line, [(name, dur_ns, event)]) of device planes, or of the host's XLA threads when none."""
    out = []
    for plane in pd.planes:
        if not plane.name.startswith("/device:"):
            continue
        for line in plane.lines:
            out.append((plane.name, line.name, [(e.name, e.duration_ns, e) for e in line.events]))
    if out:
        return out
    for plane in pd.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if line.name.startswith("tf_XLA"):  # XLA:CPU's op threads
                out.append((plane.name, line.name, [(e.name, e.duration_ns, e) for e in line.events]))
    return out


def summarize(trace_dir: str, calls: int = 1, top: int = 25) -> dict:
    """{"lines": [{plane, line, total_ms, events, top: [{name, ms, count, share, stats}]}]}, per call,
    busiest line first."""
    from jax.profiler import ProfileData

    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
    if not files:
        return {"error": f"no .xplane.pb under {trace_dir}"}
    pd = ProfileData.from_file(files[-1])
    merged: dict[tuple[str, str], list] = collections.defaultdict(list)
    for plane, line, events in _lines(pd):
        merged[(plane, line)] += events
    rows = []
    for (plane, line), events in merged.items():
        per: collections.Counter = collections.Counter()
        cnt: collections.Counter = collections.Counter()
        first: dict = {}
        for name, dur, ev in events:
            per[name] += dur
            cnt[name] += 1
            first.setdefault(name, ev)
        total = sum(per.values())
        if not total:
            continue
        rows.append({
            "plane": plane, "line": line, "total_ms": round(total / 1e6 / calls, 4),
            "events": round(len(events) / calls, 1),
            "top": [{"name": n[:160], "ms": round(d / 1e6 / calls, 4), "count": round(cnt[n] / calls, 1),
                     "share": round(d / total, 4), "stats": _stats(first[n])}
                    for n, d in per.most_common(top)],
        })
    rows.sort(key=lambda r: -r["total_ms"])
    return {"calls": calls, "file": os.path.basename(files[-1]), "lines": rows}


def short(summary: dict, lines: int = 3, top: int = 8) -> dict:
    """The busiest lines' top events only: small enough for one JSON line of a benchmark's output."""
    if "lines" not in summary:
        return summary
    return {"calls": summary["calls"], "lines": [
        {**{k: r[k] for k in ("plane", "line", "total_ms", "events")},
         "top": [(e["name"][:80], e["ms"], e["share"]) for e in r["top"][:top]]}
        for r in summary["lines"][:lines]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trace_dir")
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    print(json.dumps(summarize(a.trace_dir, a.calls, a.top), indent=1))


if __name__ == "__main__":
    main()
