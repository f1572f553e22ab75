"""A/B of XLA flag sets on `benchmarks/train_step.py`, robust to a CPU shared with other processes.

Why: on this 2-core machine other jobs come and go, and one run of train_step.py moves by +-30% with them.
Each variant runs in its own process (XLA reads XLA_FLAGS once), variants alternate round after round so
that load drifts hit them alike, and every timed step of every round is pooled: the report gives, per
variant, the fastest step (the least disturbed), the 25th percentile and the median, the loadavg range,
and the ratio of each to the first variant.

    python benchmarks/xla_ab.py --variant base= \\
        --variant eigen_conv=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution \\
        --rounds 3 -- --model wrn28_2 --batch 8 --uratio 2 --image-size 32 --channels 3 --steps 6

Variants get exactly their flags: BOOSTMIS_XLA_DEFAULTS=0 turns the project's defaults (xla_env.py) off.
One JSON line per round and variant (stderr) and one summary line per variant (stdout).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pct(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    rest: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", action="append", required=True, help="NAME=XLA_FLAGS (repeatable; first = base)")
    p.add_argument("--set", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="extra environment variable for variant NAME (repeatable), e.g. a model switch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--defaults", action="store_true", help="keep the project's xla_env defaults under each variant")
    a = p.parse_args(argv)
    variants = [v.split("=", 1) if "=" in v else (v, "") for v in a.variant]
    extra_env: dict[str, dict[str, str]] = {}
    for item in a.set:
        name, kv = item.split(":", 1)
        k, v = kv.split("=", 1)
        extra_env.setdefault(name, {})[k] = v
    pooled: dict[str, dict[str, list[float]]] = {n: {} for n, _ in variants}
    loads: dict[str, list[float]] = {n: [] for n, _ in variants}
    batch: dict[str, int] = {}
    for r in range(a.rounds):
        for name, flags in variants:
            env = {**os.environ, "XLA_FLAGS": flags, **extra_env.get(name, {})}
            if not a.defaults:
                env["BOOSTMIS_XLA_DEFAULTS"] = "0"
            out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step.py"), *rest], env=env,
                                 capture_output=True, text=True, check=False)
            rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            rows = [row for row in rows if "times_ms" in row]
            if out.returncode or not rows:
                print(json.dumps({"round": r, "variant": name, "error": out.stderr[-800:]}), file=sys.stderr)
                continue
            for row in rows:
                for kind, ts in row["times_ms"].items():
                    key = f"{row['model']}:{row['dtype']}:{kind}"
                    pooled[name].setdefault(key, []).extend(ts)
                    batch[key] = row["batch"]
                loads[name] += [x for x in row["loadavg"] if x is not None]
                print(json.dumps({"round": r, "variant": name, "model": row["model"],
                                  "ssl_img_per_s": row["ssl_img_per_s"], "bare_img_per_s": row["bare_img_per_s"],
                                  "ssl_best": row["ssl_img_per_s_best"], "bare_best": row["bare_img_per_s_best"],
                                  "loadavg": row["loadavg"]}), file=sys.stderr, flush=True)
    base = variants[0][0]
    for name, flags in variants:
        summary: dict = {"variant": name, "xla_flags": flags, "env": extra_env.get(name, {}), "rounds": a.rounds,
                         "loadavg": [min(loads[name], default=None), max(loads[name], default=None)]}
        for key, ts in sorted(pooled[name].items()):
            s = {"n": len(ts), "min_ms": round(min(ts), 1), "p25_ms": round(pct(ts, 0.25), 1),
                 "median_ms": round(statistics.median(ts), 1),
                 "img_per_s_best": round(1e3 * batch[key] / min(ts), 1),
                 "img_per_s_p25": round(1e3 * batch[key] / pct(ts, 0.25), 1),
                 "img_per_s_median": round(1e3 * batch[key] / statistics.median(ts), 1)}
            b = pooled[base].get(key)
            if b and name != base:
                s["speedup_min"] = round(min(b) / min(ts), 3)
                s["speedup_p25"] = round(pct(b, 0.25) / pct(ts, 0.25), 3)
                s["speedup_median"] = round(statistics.median(b) / statistics.median(ts), 3)
            summary[key] = s
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
