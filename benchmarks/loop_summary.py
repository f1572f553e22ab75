"""One JSON line from a finished (or cut) run's workdir: the real loop's throughput and phase times.

    python benchmarks/loop_summary.py WORKDIR [--label bf16] [--wall 39.2]

Reads metrics.jsonl (`perf/*` keys of the train rows) and, when the run finished, summary.json (`timing`,
test metrics, compiles). `--wall` is the process's wall seconds measured outside it (start to exit).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def summarize(workdir: str, label: str = "", wall: float | None = None) -> dict:
    wd = Path(workdir)
    rows = []
    if (wd / "metrics.jsonl").is_file():
        for line in (wd / "metrics.jsonl").read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    train = [r for r in rows if "perf/img_per_s" in r]
    out: dict = {"case": "loop", "label": label, "workdir": wd.name, "wall_s_outside": wall,
                 "last_step": max((r["step"] for r in rows if "step" in r), default=0)}
    by_cycle: dict[int, list[float]] = {}
    for r in train:
        by_cycle.setdefault(int(r.get("cycle", 0)), []).append(r["perf/img_per_s"])
    out["img_per_s_median_by_cycle"] = {str(c): round(statistics.median(v), 1) for c, v in by_cycle.items()}
    out["steps_per_s_median"] = (round(statistics.median(r["perf/steps_per_s"] for r in train), 2)
                                 if train else None)
    if (wd / "summary.json").is_file():
        s = json.loads((wd / "summary.json").read_text())
        out.update(timing=s.get("timing"), wall_time_s=round(s.get("wall_time_s", 0.0), 2),
                   steps=s.get("steps"), compiles=s.get("compiles"), backend=s.get("backend"),
                   test_macro_f1=s.get("test", {}).get("macro_f1"), test_auc=s.get("test", {}).get("auc"),
                   labeled=s.get("labeled"), dtype=s.get("config", {}).get("model", {}).get("dtype"))
    else:
        out["finished"] = False
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir")
    p.add_argument("--label", default="")
    p.add_argument("--wall", type=float, default=None)
    a = p.parse_args()
    print(json.dumps(summarize(a.workdir, a.label, a.wall)), flush=True)


if __name__ == "__main__":
    main()
