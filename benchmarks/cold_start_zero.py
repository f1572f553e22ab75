"""Cold start from zero labels: the four arms of issue 22 on one case, seeds in parallel worker processes.

Arms (later rounds equal and passive in every arm: random over all unlabeled rows, so the arms differ only
in the first round's picks and in the task model's init):

    typiclust_init    al.initial=typiclust on the SimCLR embedding, task model from the SimCLR backbone
    typiclust_noinit  the same picks, task model from its own seeded init
    random_init       al.initial=random (seeded, the same rows in both random arms), SimCLR init
    random_noinit     al.initial=random, no self-supervised stage (= selfsup.init=False, tested)

    python benchmarks/cold_start_zero.py --out runs/cold --seeds 0,1,2 --workers 1       # CPU: slow
    python benchmarks/cold_start_zero.py --out runs/cold --seeds 0-9 --workers 8 -- --config.model.name=cnn

Everything after `--` is passed to every run (e.g. a data cut or a smaller schedule). Writes
OUT/runs/<arm>/seed<N>/ (each a normal workdir: rerunning resumes) and OUT/cold_start.json: per run the
curve (labels -> test balanced accuracy and macro-F1) and its AUBC (trapezoid over labels, normalised by the
label range), per arm the mean, and per arm vs random_noinit the paired mean difference with a 95% t-interval
over the seeds both finished. One JSON line with the summary is printed at the end.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    "typiclust_init": ["--config.al.initial=typiclust", "--config.selfsup.init=True"],
    "typiclust_noinit": ["--config.al.initial=typiclust", "--config.selfsup.init=False"],
    "random_init": ["--config.al.initial=random", "--config.selfsup.init=True"],
    "random_noinit": ["--config.al.initial=random", "--config.selfsup.steps=0"],
}
REFERENCE = "random_noinit"
STOPPED: list = []
LIVE: set = set()  # worker processes running now: SIGTERM to this script stops them (they checkpoint)


def seeds_of(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def aubc(labels: list[int], values: list[float]) -> float:
    """Area under the budget curve, trapezoid over labels, divided by the label range (one point: itself)."""
    if len(labels) < 2:
        return float(values[0])
    area = sum((labels[i + 1] - labels[i]) * (values[i] + values[i + 1]) / 2 for i in range(len(labels) - 1))
    return area / (labels[-1] - labels[0])


def t_interval(d: list[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): the 95% paired t-interval (scipy's t quantile)."""
    from scipy import stats

    n = len(d)
    m = sum(d) / n
    if n < 2:
        return m, float("nan"), float("nan")
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
    h = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return m, m - h, m + h


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/cold_start_zero")
    p.add_argument("--config", default="configs/pneumonia.py")
    p.add_argument("--seeds", default="0-2")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--selfsup-steps", type=int, default=1000)
    p.add_argument("--cycles", type=int, default=4)
    p.add_argument("--round", type=int, default=20, help="labels per round, the first included")
    a = p.parse_args(argv)
    out = Path(a.out)
    base = ["--config.data.num_labels=0", "--config.al.oracle=simulated", f"--config.al.cycles={a.cycles}",
            "--config.al.selectors=random", "--config.al.candidates=all", f"--config.al.budget={a.round}",
            f"--config.selfsup.steps={a.selfsup_steps}"]
    jobs = [(arm, seed) for seed in seeds_of(a.seeds) for arm in a.arms.split(",")]

    def one(job):
        arm, seed = job
        wd = out / "runs" / arm / f"seed{seed}"
        wd.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "boostmis_jax.main", f"--config={a.config}", f"--workdir={wd}",
               f"--config.seed={seed}", *base, *ARMS[arm], *extra]
        t0 = time.time()
        with open(wd / "log.txt", "a") as log:
            proc = subprocess.Popen(cmd, cwd=os.getcwd(), stdout=log, stderr=subprocess.STDOUT)
            LIVE.add(proc)
            rc = proc.wait()
            LIVE.discard(proc)
        print(json.dumps({"arm": arm, "seed": seed, "rc": rc, "wall_s": round(time.time() - t0, 1)}), flush=True)
        return arm, seed, rc, time.time() - t0

    finished: dict = {}

    def stop(signum, frame):  # time is up: the workers checkpoint and stop; the finished runs are reported
        STOPPED.append(signum)
        for proc in list(LIVE):
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    with ThreadPoolExecutor(max(1, a.workers)) as pool:
        for arm, seed, rc, wall in pool.map(lambda j: one(j) if not STOPPED else (*j, None, 0.0), jobs):
            finished[(arm, seed)] = (rc, wall)
    runs = []
    for (arm, seed), (rc, wall) in finished.items():
        f = out / "runs" / arm / f"seed{seed}" / "summary.json"
        if rc != 0 or not f.exists():
            runs.append({"arm": arm, "seed": seed, "rc": rc})
            continue
        s = json.loads(f.read_text())
        labels = [c["labeled"] for c in s["cycles"]]
        bacc = [c["test"]["balanced_accuracy"] for c in s["cycles"]]
        f1 = [c["test"]["macro_f1"] for c in s["cycles"]]
        first = s["picks"]["0"]
        runs.append({"arm": arm, "seed": seed, "rc": rc, "wall_s": round(wall, 1), "labels": labels,
                     "balanced_accuracy": bacc, "macro_f1": f1, "aubc_balanced_accuracy": aubc(labels, bacc),
                     "aubc_macro_f1": aubc(labels, f1),
                     "first_round_per_class": [sum(1 for q in first if q["label"] == k)
                                               for k in range(len(s["test"]["per_class_recall"]))]})
    ok = [r for r in runs if "labels" in r]
    arms: dict = {}
    for arm in a.arms.split(","):
        rs = [r for r in ok if r["arm"] == arm]
        if not rs:
            continue
        arms[arm] = {"n": len(rs), **{k: sum(r[k] for r in rs) / len(rs)
                                      for k in ("aubc_balanced_accuracy", "aubc_macro_f1", "wall_s")}}
        ref = {r["seed"]: r for r in ok if r["arm"] == REFERENCE}
        for k in ("aubc_balanced_accuracy", "aubc_macro_f1"):
            d = [r[k] - ref[r["seed"]][k] for r in rs if r["seed"] in ref]
            if d and arm != REFERENCE:
                m, lo, hi = t_interval(d)
                arms[arm][f"vs_{REFERENCE}/{k}"] = {"delta": m, "ci95": [lo, hi], "n": len(d)}
    result = {"config": a.config, "extra": extra, "base": base, "arms": arms, "runs": runs}
    out.mkdir(parents=True, exist_ok=True)
    (out / "cold_start.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"arms": arms, "failed": [(r["arm"], r["seed"]) for r in runs if "labels" not in r]}))


if __name__ == "__main__":
    main()
