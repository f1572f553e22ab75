"""Cold start from zero labels: the four arms (first picks x self-supervised init) on one case, seeds in parallel worker processes.

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
    p.add_argument("--collect", default="",
                   help="only report: ROOT/<arm>/<seed>/summary.json -> OUT/cold_start.json")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.collect:
        result = collect(Path(a.collect))
        out.mkdir(parents=True, exist_ok=True)
        (out / "cold_start.json").write_text(json.dumps(result, indent=1) + "\n")
        plot(out / "cold_start.png", result)
        print(json.dumps({"arms": result["arms"], "pairs": result["pairs"]}, indent=1))
        return
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
        print(json.dumps({"arm": arm, "seed": seed, "rc": rc, "wall_s": round(time.time() - t0, 1)}),
              flush=True)
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
    failed = [(arm, seed) for (arm, seed), (rc, _) in finished.items() if rc != 0]
    result = collect(out / "runs", a.arms.split(","))
    result.update(config=a.config, extra=extra, base=base, failed=failed)
    (out / "cold_start.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"arms": result["arms"], "pairs": result["pairs"], "failed": failed}))


SHORT = {"ti": "typiclust_init", "tn": "typiclust_noinit", "ri": "random_init", "rn": "random_noinit"}
PAIRS = (("typiclust_init", "random_noinit"), ("typiclust_init", "random_init"),
         ("typiclust_init", "typiclust_noinit"), ("typiclust_noinit", "random_noinit"),
         ("random_init", "random_noinit"))
METRICS = ("balanced_accuracy", "macro_f1", "auc")


def collect(root: Path, arms: list[str] | None = None) -> dict:
    """Curves, AUBCs and paired comparisons from ROOT/<arm>/<seedN or sN>/summary.json (arm names or the
    short ti/tn/ri/rn of an inline device run)."""
    from scipy import stats

    runs: dict = {}
    for f in sorted(Path(root).glob("*/*/summary.json")):
        arm = SHORT.get(f.parent.parent.name, f.parent.parent.name)
        seed = int(f.parent.name.removeprefix("seed").removeprefix("s"))
        s = json.loads(f.read_text())
        labels = [c["labeled"] for c in s["cycles"]]
        row = {"labels": labels, "wall_s": round(s["wall_time_s"], 1),
               "first_round_per_class": [sum(1 for q in s["picks"]["0"] if q["label"] == k)
                                         for k in range(len(s["test"]["per_class_recall"]))]}
        for k in METRICS:
            row[k] = [c["test"][k] for c in s["cycles"]]
            row[f"aubc_{k}"] = aubc(labels, row[k])
        runs[(arm, seed)] = row
    arms = [a for a in (arms or list(ARMS)) if any(r[0] == a for r in runs)]
    out_arms = {}
    for arm in arms:
        rs = [r for (a, _), r in sorted(runs.items()) if a == arm]
        mean = lambda xs: sum(xs) / len(xs)
        out_arms[arm] = {"n": len(rs), "labels": rs[0]["labels"], "wall_s": mean([r["wall_s"] for r in rs]),
                         "first_round_per_class": [mean([r["first_round_per_class"][k] for r in rs])
                                                   for k in range(len(rs[0]["first_round_per_class"]))]}
        for k in METRICS:
            out_arms[arm][f"aubc_{k}"] = mean([r[f"aubc_{k}"] for r in rs])
            out_arms[arm][k] = [mean([r[k][i] for r in rs]) for i in range(len(rs[0][k]))]
    pairs = {}
    for a, b in PAIRS:
        seeds = sorted(s for (x, s) in runs if x == a and (b, s) in runs)
        if len(seeds) < 2:
            continue
        for k, get in (("aubc_balanced_accuracy", lambda r: r["aubc_balanced_accuracy"]),
                       ("aubc_macro_f1", lambda r: r["aubc_macro_f1"]),
                       ("first_balanced_accuracy", lambda r: r["balanced_accuracy"][0])):
            d = [get(runs[(a, s)]) - get(runs[(b, s)]) for s in seeds]
            m, lo, hi = t_interval(d)
            p = float(stats.wilcoxon(d).pvalue) if any(d) else float("nan")
            pairs[f"{a} - {b}: {k}"] = {"delta": m, "ci95": [lo, hi], "wilcoxon_p": p,
                                         "wins": sum(x > 0 for x in d), "n": len(d), "seeds": seeds}
    return {"arms": out_arms, "pairs": pairs,
            "runs": [{"arm": a, "seed": s, **r} for (a, s), r in sorted(runs.items())]}


def plot(path: Path, result: dict, metric: str = "balanced_accuracy") -> None:
    """Mean test `metric` per arm against labels, with the 95% t-band over seeds."""
    sys.path.insert(0, str(ROOT))
    from scipy import stats

    from boostmis_jax import reporting

    fig = reporting._new_figure((6.4, 4.2))
    ax = fig.subplots()
    for arm in result["arms"]:
        rs = [r for r in result["runs"] if r["arm"] == arm]
        labels, n = rs[0]["labels"], len(rs)
        ys = [[r[metric][i] for r in rs] for i in range(len(labels))]
        mean = [sum(y) / n for y in ys]
        half = [stats.t.ppf(0.975, n - 1) * (sum((v - m) ** 2 for v in y) / (n - 1)) ** 0.5 / n ** 0.5
                if n > 1 else 0.0 for y, m in zip(ys, mean)]
        ax.plot(labels, mean, marker="o", label=f"{arm} (AUBC {result['arms'][arm]['aubc_' + metric]:.3f})")
        ax.fill_between(labels, [m - h for m, h in zip(mean, half)], [m + h for m, h in zip(mean, half)],
                        alpha=0.12)
    ax.set_xlabel("labels (from zero)")
    ax.set_ylabel(f"test {metric.replace('_', ' ')}")
    ax.set_title(f"cold start, {len(rs)} seeds: mean and 95% t-band")
    ax.legend(fontsize=8)
    reporting._save_figure(fig, path)


if __name__ == "__main__":
    main()
