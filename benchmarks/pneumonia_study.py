"""PneumoniaMNIST studies behind the README tables, each a plain run of the CLI in its own workdir.

  ssl:  BoostMIS thresholding vs supervised only (ssl.threshold=none), same labels, steps and seed.
  al:   BoostMIS active annotation (aus+bus) vs random picks, al.cycles rounds, simulated oracle.

Prints one JSON line per run and a markdown table of what it measured. A workdir with a summary.json is
re-reported, not re-run (delete it to redo that run); an unfinished one resumes.

  python benchmarks/pneumonia_study.py --study ssl --out runs/study
  python benchmarks/pneumonia_study.py --study al --out runs/study --cycles 3
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
DATA = ROOT.parent / "shared" / "data" / "pneumoniamnist.npz"


def run(workdir: Path, overrides: list[str]) -> dict:
    if (workdir / "summary.json").exists():  # finished: re-report it (delete the workdir to redo it)
        return json.loads((workdir / "summary.json").read_text())
    cmd = [sys.executable, "-m", "boostmis_jax.main", "--config=configs/pneumonia.py", f"--workdir={workdir}",
           f"--config.data.path={DATA}", *overrides]
    print("$ " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"run failed ({workdir}): {p.stderr.strip().splitlines()[-1]}")
    s = json.loads((workdir / "summary.json").read_text())
    s["_seconds_this_call"] = time.time() - t0
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", choices=["ssl", "al"], required=True)
    ap.add_argument("--out", default="runs/study")
    ap.add_argument("--steps", type=int, default=None, help="train.steps (default: the config's)")
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--steps-per-cycle", type=int, default=None)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--budget", type=int, default=16, help="al.budget K per selector; random gets 2K")
    ap.add_argument("--arms", default="", help="comma-separated substrings: run only the matching arms")
    ap.add_argument("--extra", nargs="*", default=[], help="more --config.KEY=VALUE overrides for every run")
    args = ap.parse_args()
    out = Path(args.out)
    common = list(args.extra)
    if args.steps:
        common.append(f"--config.train.steps={args.steps}")
    if args.study == "ssl":
        arms = {"BoostMIS SSL (threshold=boostmis)": ["--config.ssl.threshold=boostmis"],
                "supervised only (threshold=none)": ["--config.ssl.threshold=none"],
                "FixMatch (threshold=fixed 0.95)": ["--config.ssl.threshold=fixed"]}
    else:
        common += [f"--config.al.cycles={args.cycles}"]
        if args.steps_per_cycle:
            common.append(f"--config.al.steps_per_cycle={args.steps_per_cycle}")
        # aus+bus picks K each (union backfilled to 2K distinct samples): random gets 2K, equal labels.
        arms = {"BoostMIS AL (aus+bus)": ["--config.al.selectors=aus+bus", f"--config.al.budget={args.budget}"],
                "random picks": ["--config.al.selectors=random", f"--config.al.budget={2 * args.budget}"]}
    if args.arms:
        wanted = [a.strip().lower() for a in args.arms.split(",")]
        arms = {k: v for k, v in arms.items() if any(w in k.lower() for w in wanted)}
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, extra in arms.items():
            tag = name.split(" (")[0].lower().replace(" ", "_").replace("+", "")
            wd = out / f"{args.study}_{tag}_seed{seed}"
            s = run(wd, [*common, *extra, f"--config.seed={seed}"])
            row = {"study": args.study, "arm": name, "seed": seed, "workdir": str(wd), "labeled": s["labeled"],
                   "steps": s["steps"], "test_macro_f1": s["test"]["macro_f1"],
                   "test_accuracy": s["test"]["accuracy"], "test_auc": s["test"]["auc"],
                   "test_balanced_accuracy": s["test"]["balanced_accuracy"], "val_macro_f1": s["val"]["macro_f1"],
                   "test_recall_per_class": s["test"]["per_class_recall"], "wall_time_s": s["wall_time_s"],
                   "curve": [(c["labeled"], c["test"]["macro_f1"]) for c in s["cycles"]],
                   "val_curve": [(c["labeled"], c["val"]["macro_f1"]) for c in s["cycles"]]}
            results.append(row)
            print(json.dumps(row), flush=True)
    print()
    if args.study == "ssl":
        print("| method | seed | labels | steps | test macro-F1 | test accuracy | test AUC | test recall (normal, pneumonia) "
              "| val macro-F1 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in results:
            rec = ", ".join(f"{x:.3f}" for x in r["test_recall_per_class"])
            print(f"| {r['arm']} | {r['seed']} | {r['labeled']} | {r['steps']} | {r['test_macro_f1']:.4f} | "
                  f"{r['test_accuracy']:.4f} | {r['test_auc']:.4f} | {rec} | {r['val_macro_f1']:.4f} |")
        seeds = sorted({r["seed"] for r in results})
        if len(seeds) > 1:
            for arm in arms:
                rs = [r for r in results if r["arm"] == arm]
                mean = {k: sum(r[k] for r in rs) / len(rs)
                        for k in ("test_macro_f1", "test_accuracy", "test_auc", "val_macro_f1")}
                print(f"| **{arm}, mean of {len(rs)} seeds** | {','.join(str(r['seed']) for r in rs)} | "
                      f"{rs[0]['labeled']} | {rs[0]['steps']} | {mean['test_macro_f1']:.4f} | "
                      f"{mean['test_accuracy']:.4f} | {mean['test_auc']:.4f} | | {mean['val_macro_f1']:.4f} |")
    else:
        print("test / val macro-F1 of the best-by-val EMA weights at the end of each cycle:\n")
        print("| method | seed | " + " | ".join(f"cycle {i}" for i in range(args.cycles + 1)) + " |")
        print("|---|---|" + "---|" * (args.cycles + 1))
        for r in results:
            cells = " | ".join(f"{n} labels: {f:.4f} / {v:.4f}" for (n, f), (_, v) in zip(r["curve"], r["val_curve"]))
            print(f"| {r['arm']} | {r['seed']} | {cells} |")
        try:
            from boostmis_jax.reporting import plot_learning_curve
            rows = [{"method": r["arm"], "labeled": n, "test/macro_f1": f} for r in results for n, f in r["curve"]]
            plot_learning_curve(out / "al_learning_curve.png", rows)
            print(f"\nlearning curve: {out / 'al_learning_curve.png'}")
        except (ImportError, OSError, ValueError) as e:  # plotting is a convenience here
            print(f"(no plot: {e})", file=sys.stderr)


if __name__ == "__main__":
    main()
