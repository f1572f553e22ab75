"""The paper's comparison as one command: a grid of (method x seed) runs at equal labels and equal steps,
each through the same `train.run` as `main`, then the tables and plots that compare them.

  python -m boostmis_jax.study --config configs/study_pneumonia.py --workdir DIR [--config.KEY=VALUE ...]
  python -m boostmis_jax.study --config configs/study_pneumonia.py --workdir DIR --config.study.preset=full
  python -m boostmis_jax.study ... --dry_run          # print the planned runs and exit

A study config is a run config (built on `defaults.get_config`) plus a `study` section (`study_section`):
the methods (presets in `METHODS`), the seeds and the preset name. Every (method, seed) gets its own workdir,
DIR/runs/<method>/seed<k>: a finished run (summary.json written under the planned config) is skipped on a
rerun, an unfinished one resumes from its checkpoints (train.run does that). DIR/study.json, DIR/study.md and
the PNGs are rewritten after every run, so they always show what has finished.

Equal labeling cost: the BoostMIS arm starts from data.num_labels and annotates al.budget x #selectors per
cycle for al.cycles cycles; single-selector AL arms get that whole round as their budget; SSL-only methods
get the final count, drawn once up front (data.label_balance as the base). Equal steps: SSL-only methods
train train.steps + al.cycles x al.steps_per_cycle steps in one stage.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime
import importlib.util
import inspect
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from boostmis_jax.errors import UserError

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auc")
METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced acc.", "macro_f1": "macro-F1",
                "auc": "AUC"}
PRESETS = ("reduced", "full")
REFERENCE_METHOD = "boostmis"       # the arm every other method is paired against


# ======================================================================================================
# Methods: each a preset of the run config
# ======================================================================================================
@dataclasses.dataclass(frozen=True)
class Method:
    """How one arm differs from the base config. `selectors` set = an AL arm (al.cycles rounds from
    data.num_labels); empty = labels drawn up front (the AL arms' final count, or every train row)."""

    title: str
    threshold: str
    selectors: str = ""
    all_labels: bool = False

    @property
    def active(self) -> bool:
        return bool(self.selectors)


METHODS: dict[str, Method] = {
    "supervised": Method("supervised only", "none"),
    "fixmatch": Method("FixMatch (fixed 0.95)", "fixed"),
    "flexmatch": Method("FlexMatch", "flexmatch"),
    "freematch": Method("FreeMatch", "freematch"),
    "boostmis_ssl": Method("BoostMIS threshold, no AL", "boostmis"),
    "boostmis": Method("BoostMIS (AUS+BUS)", "boostmis", "aus+bus"),
    "aus_only": Method("AUS only", "boostmis", "aus"),
    "bus_only": Method("BUS only", "boostmis", "bus"),
    "random_al": Method("random picks", "boostmis", "random"),
    "entropy_al": Method("entropy picks", "boostmis", "entropy"),
    "coreset_al": Method("core-set picks", "boostmis", "coreset"),
    "full_supervised": Method("every train label, supervised", "none", all_labels=True),
}

# Published results printed beside full_supervised (study.reference); never computed here.
REFERENCES: dict[str, dict] = {
    "medmnist_v2_pneumonia": {
        "source": "Yang et al., MedMNIST v2, Scientific Data 2023, PneumoniaMNIST test split",
        "rows": [{"title": "MedMNIST v2, ResNet-18 at 28 px, every label (published)", "accuracy": 0.854,
                  "auc": 0.944},
                 {"title": "MedMNIST v2, ResNet-50 at 224 px, every label (published)", "accuracy": 0.884,
                  "auc": 0.962}],
    },
}


def study_section(methods: Sequence[str], seeds: Sequence[int], preset: str, *, reference: str = "",
                  data: str = "") -> ml_collections.ConfigDict:
    """The `study` section a study config adds to its run config (every key the study reads)."""
    s = ml_collections.ConfigDict()
    s.methods = ",".join(methods)       # comma-joined names from study.METHODS, or 'all'
    s.seeds = ",".join(str(int(k)) for k in seeds)   # comma-joined; each seed is a full run per method
    s.preset = preset                   # reduced (2 CPU cores, ~90 min) | full (GPU); rebuilds the config
    s.reference = reference             # '' | medmnist_v2_pneumonia: published rows beside full_supervised
    s.data = data                       # '' | breast_cancer_mescc | digits_longtail: written into DIR/data
    s.longtail_classes = 6              # digits_longtail: digits 0..C-1 (six, as MESCC's grades)
    s.longtail_ratio = 10.0             # digits_longtail: largest / smallest train class
    s.train_minority = 0.0              # > 0: a MedMNIST npz's train split with its rarest class cut to
    #                                     this share of train (val/test untouched), written into DIR/data
    return s


def parse_methods(text: str) -> list[str]:
    names = list(METHODS) if text.strip() == "all" else [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if not names or unknown:
        raise UserError(f"study.methods: unknown or empty {unknown or names}; use comma-joined names from "
                        f"{list(METHODS)} (or 'all')")
    if len(set(names)) != len(names):
        raise UserError(f"study.methods: {names} repeats a name; list each method once")
    return names


def parse_seeds(text: Any) -> list[int]:
    parts = [str(text)] if isinstance(text, int) else str(text).replace(" ", "").strip("()[]").split(",")
    try:
        seeds = [int(p) for p in parts if p]
    except ValueError:
        raise UserError(f"study.seeds={text!r}: expected comma-joined integers; "
                        f"set --config.study.seeds=0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"study.seeds={text!r}: need distinct seeds; set --config.study.seeds=0,1,2")
    return seeds


# ======================================================================================================
# The plan: one run config per (method, seed)
# ======================================================================================================
@dataclasses.dataclass
class PlannedRun:
    method: str
    seed: int
    workdir: Path
    cfg: ml_collections.ConfigDict
    labels: int          # labels at the end of the run
    steps: int           # total steps

    @property
    def name(self) -> str:
        return f"{self.method} seed {self.seed}"


def run_base(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The study config without its `study` section: what every run starts from (locked)."""
    base = copy.deepcopy(cfg)
    if "study" in base:
        with base.unlocked():
            del base["study"]
    base.lock()
    return base


def budget_plan(base: ml_collections.ConfigDict) -> dict:
    """Labels per round, final labels and total steps of the BoostMIS arm, which every arm matches."""
    from boostmis_jax.acquisition import parse_selectors

    cycles, first = int(base.al.cycles), int(base.train.steps)
    later = int(base.al.steps_per_cycle) or first
    round_size = int(base.al.budget) * len(parse_selectors(METHODS[REFERENCE_METHOD].selectors))
    return {"initial": int(base.data.num_labels), "round": round_size, "cycles": cycles,
            "labels": int(base.data.num_labels) + cycles * round_size, "steps": first + cycles * later}


def method_config(base: ml_collections.ConfigDict, method: str, seed: int, n_train: int
                  ) -> tuple[ml_collections.ConfigDict, int, int]:
    """(run config, final labels, total steps) of `method` at `seed` under the equal-cost rules."""
    from boostmis_jax.acquisition import parse_selectors

    m, b = METHODS[method], budget_plan(base)
    c = copy.deepcopy(base)
    c.seed = int(seed)
    c.ssl.threshold = m.threshold
    if m.active:
        c.al.selectors = m.selectors
        c.al.budget = b["round"] // len(parse_selectors(m.selectors))
        return c, b["labels"], b["steps"]
    labels = n_train if m.all_labels else b["labels"]
    c.data.num_labels = labels
    if m.all_labels and "label_balance" in c.data:
        c.data.label_balance = "stratified"   # every row: nothing to balance
    c.al.cycles = 0
    c.al.steps_per_cycle = 0
    c.train.steps = b["steps"]
    return c, labels, b["steps"]


def make_plan(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike, n_train: int) -> list[PlannedRun]:
    """Every (method, seed) run of the study, seed-major so a partial study has whole seeds first."""
    base = run_base(cfg)
    methods, seeds = parse_methods(cfg.study.methods), parse_seeds(cfg.study.seeds)
    check_study(base, methods, n_train)
    plan = []
    for seed in seeds:
        for method in methods:
            c, labels, steps = method_config(base, method, seed, n_train)
            plan.append(PlannedRun(method, seed, Path(workdir) / "runs" / method / f"seed{seed}", c, labels,
                                   steps))
    return plan


def check_study(base: ml_collections.ConfigDict, methods: list[str], n_train: int) -> None:
    """What would make the arms incomparable or the study stall, in one line each."""
    active = [m for m in methods if METHODS[m].active]
    if active and int(base.al.cycles) < 1:
        raise UserError(f"study: methods {active} are active-learning arms but al.cycles=0; set "
                        f"--config.al.cycles=3 (or drop them from study.methods)")
    if str(base.al.oracle) != "simulated":
        raise UserError(f"study: al.oracle={base.al.oracle!r} would wait for a person in every AL run; set "
                        f"--config.al.oracle=simulated (use main for a files-oracle run)")
    if str(base.data.split_file):
        raise UserError("study: data.split_file fixes the labeled rows, so the SSL arms cannot get the AL "
                        "arms' final count; set --config.data.split_file=''")
    b = budget_plan(base)
    if b["labels"] > n_train:
        raise UserError(f"study: the AL arms end with {b['labels']} labels (data.num_labels + al.cycles x "
                        f"al.budget x 2) but train has {n_train} rows; lower --config.al.budget or al.cycles")


# ======================================================================================================
# Data the example studies write once into DIR/data
# ======================================================================================================
def prepare_data(cfg: ml_collections.ConfigDict, workdir: Path) -> None:
    """study.data with an empty data.path: write the example data set into DIR/data once and point
    data.path at it (the written arrays are a pure function of the study keys)."""
    name = str(cfg.study.data)
    if name and not str(cfg.data.path):
        if name not in PREPARERS:
            raise UserError(f"study.data={name!r} is unknown; choose one of {sorted(PREPARERS)} or ''")
        cfg.data.path = str(PREPARERS[name](cfg.study, workdir / "data"))
    share = float(cfg.study.get("train_minority", 0.0))
    if share:
        if str(cfg.data.source) != "medmnist_npz":
            raise UserError(f"study.train_minority={share:g} cuts a MedMNIST-layout npz, but data.source is "
                            f"{cfg.data.source!r}; set --config.study.train_minority=0")
        cfg.data.path = str(write_minority_cut(Path(str(cfg.data.path)), share, workdir / "data"))


def _save_arrays(path: Path, arrays: dict[str, np.ndarray] | np.ndarray) -> None:
    """One .npy (an array) or .npz (a dict of arrays), written atomically."""
    from boostmis_jax.fsutil import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            if isinstance(arrays, dict):
                np.savez(f, **arrays)
            else:
                np.save(f, arrays, allow_pickle=False)

    atomic_write(path, write, suffix=path.suffix)


def write_breast_cancer_mescc(s: Any, datadir: Path) -> Path:
    """scikit-learn's breast-cancer features in the MESCC release layout ({split}-features.npy,
    {split}-targets.npy), val/test carved stratified with seed 0 as the sklearn source does."""
    from sklearn.datasets import load_breast_cancer

    from boostmis_jax.data.split import stratified_carve

    root = datadir / "breast_cancer_mescc"
    files = [root / f"{sp}-{k}.npy" for sp in ("train", "val", "test") for k in ("features", "targets")]
    if all(f.exists() for f in files):
        return root
    bunch = load_breast_cancer()
    x, y = np.asarray(bunch.data, np.float32), np.asarray(bunch.target, np.int64)
    train, test, val = stratified_carve(y, [0.2, 0.1], seed=0)
    for split, idx in (("train", train), ("val", val), ("test", test)):
        _save_arrays(root / f"{split}-features.npy", x[idx])
        _save_arrays(root / f"{split}-targets.npy", y[idx])
    return root


def longtail_counts(per_class: int, classes: int, ratio: float) -> list[int]:
    """Exponential long tail: class c keeps per_class * ratio^(-c/(C-1)) rows (>= 1)."""
    if classes < 2 or ratio < 1:
        raise UserError(f"study.longtail_classes={classes}, study.longtail_ratio={ratio}: need >= 2 classes "
                        f"and a ratio >= 1")
    return [max(1, round(per_class * ratio ** (-c / (classes - 1)))) for c in range(classes)]


def write_digits_longtail(s: Any, datadir: Path) -> Path:
    """scikit-learn digits 0..C-1 as a MedMNIST-layout npz: val/test balanced (carved stratified, seed 0),
    train cut to an exponential long tail (study.longtail_ratio), standing in for MESCC's graded classes."""
    from sklearn.datasets import load_digits

    from boostmis_jax.data.split import stratified_carve

    classes, ratio = int(s.longtail_classes), float(s.longtail_ratio)
    if not 2 <= classes <= 10:
        raise UserError(f"study.longtail_classes={classes}: digits has 10 classes; pick 2..10")
    path = datadir / f"digits_longtail_c{classes}_r{ratio:g}.npz"
    if path.exists():
        return path
    bunch = load_digits()
    keep = bunch.target < classes
    x = np.round(bunch.images[keep] * (255.0 / 16.0)).astype(np.uint8)
    y = bunch.target[keep].astype(np.int64)
    pool, test, val = stratified_carve(y, [0.2, 0.1], seed=0)
    per_class = min(int((y[pool] == c).sum()) for c in range(classes))
    rng = np.random.default_rng(0)
    train = np.sort(np.concatenate([rng.permutation(pool[y[pool] == c])[:n] for c, n in
                                    enumerate(longtail_counts(per_class, classes, ratio))]))
    arrays = {f"{sp}_{k}": (x[idx] if k == "images" else y[idx][:, None])
              for sp, idx in (("train", train), ("val", val), ("test", test)) for k in ("images", "labels")}
    _save_arrays(path, arrays)
    return path


def write_minority_cut(source: Path, share: float, datadir: Path) -> Path:
    """A copy of a MedMNIST-layout npz whose train split keeps every row of the other classes and a random
    (seed 0) subset of its rarest class, so that class is `share` of train: an imbalanced case (MESCC's
    high-grade share is near 10%) from a balanced-enough real set. Val and test are copied unchanged."""
    if not 0 < share < 0.5:
        raise UserError(f"study.train_minority={share:g}: expected a share in (0, 0.5), e.g. 0.1")
    try:
        with np.load(source) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise UserError(f"study.train_minority: cannot read {source} ({e}); point data.path at a "
                        f"MedMNIST-layout .npz") from None
    if "train_labels" not in arrays or "train_images" not in arrays:
        raise UserError(f"study.train_minority: {source} has no train_images/train_labels; point data.path "
                        f"at a MedMNIST-layout .npz")
    y = np.asarray(arrays["train_labels"]).reshape(len(arrays["train_labels"]), -1)[:, 0]
    classes, counts = np.unique(y, return_counts=True)
    rare = classes[np.argmin(counts)]
    rest = int((y != rare).sum())
    keep_rare = max(1, round(share / (1 - share) * rest))
    if keep_rare >= counts.min():
        raise UserError(f"study.train_minority={share:g}: class {rare} is already {counts.min() / len(y):.3f} "
                        f"of train; pass a smaller share")
    rng = np.random.default_rng(0)
    kept = np.sort(np.concatenate([np.flatnonzero(y != rare),
                                   rng.permutation(np.flatnonzero(y == rare))[:keep_rare]]))
    path = datadir / f"{source.stem}_minority{share:g}.npz"
    if path.exists():
        return path
    arrays["train_images"], arrays["train_labels"] = arrays["train_images"][kept], arrays["train_labels"][kept]
    _save_arrays(path, arrays)
    return path


PREPARERS = {"breast_cancer_mescc": write_breast_cancer_mescc, "digits_longtail": write_digits_longtail}


# ======================================================================================================
# Running: skip what is finished, resume what is not
# ======================================================================================================
def finished(p: PlannedRun) -> dict | None:
    """The run's summary when it finished under the planned config (cadence keys aside), else None."""
    from boostmis_jax.bookkeeping import config_changes
    from boostmis_jax.reporting import to_jsonable

    path = p.workdir / "summary.json"
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # torn or foreign: train.run resumes from the checkpoint and rewrites it
    planned = to_jsonable(p.cfg.to_dict())
    old = summary.get("config", {})
    if config_changes(old, planned) or old.get("al", {}).get("cycles") != planned["al"]["cycles"]:
        return None  # train.run extends it (more al.cycles) or refuses the change in one line
    return summary


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Eta:
    """Seconds left, from the runs trained in this invocation: seconds per image a step trains on, kept apart
    for supervised steps (B labeled images) and SSL steps (B + 2 x uratio x B: the unlabeled weak and strong
    views), so that after a cheap supervised run the SSL runs ahead are not priced like it. A kind not seen
    yet is priced at the seen kind's rate per image."""

    def __init__(self) -> None:
        self.spent: dict[bool, list[float]] = {True: [0.0, 0.0], False: [0.0, 0.0]}

    @staticmethod
    def kind(p: PlannedRun) -> bool:
        return str(p.cfg.ssl.threshold) != "none"

    @classmethod
    def images(cls, p: PlannedRun) -> float:
        b = float(p.cfg.train.batch_size)
        per_step = b * (1 + 2 * float(p.cfg.ssl.uratio)) if cls.kind(p) else b
        return per_step * p.steps

    def record(self, p: PlannedRun, seconds: float) -> None:
        self.spent[self.kind(p)][0] += seconds
        self.spent[self.kind(p)][1] += self.images(p)

    def left(self, todo: list[PlannedRun]) -> float | None:
        rates = {k: s / n for k, (s, n) in self.spent.items() if n}
        if not rates:
            return None
        pooled = sum(s for s, _ in self.spent.values()) / sum(n for _, n in self.spent.values())
        return sum(self.images(p) * rates.get(self.kind(p), pooled) for p in todo)


def execute(plan: list[PlannedRun], on_result, say=print) -> list[dict]:
    """Run (or skip) every planned run in order; `on_result(results)` after each. Returns the summaries."""
    from boostmis_jax import train

    t0, eta, results = time.time(), Eta(), []
    done = [finished(p) for p in plan]
    for i, p in enumerate(plan, start=1):
        head = f"[study] run {i}/{len(plan)} {p.name}"
        summary = done[i - 1]
        if summary is not None:
            say(f"{head}: finished earlier, skipped (test macro-F1 {summary['test']['macro_f1']:.4f})")
        else:
            left = eta.left([q for q, s in zip(plan[i - 1:], done[i - 1:], strict=True) if s is None])
            say(f"{head}: {p.labels} labels, {p.steps} steps, {p.workdir} (elapsed {_hms(time.time() - t0)}, "
                f"ETA {_hms(left) if left is not None else 'after the first run'})")
            t_run = time.time()
            summary = train.run(p.cfg, str(p.workdir))
            if summary.get("status") == "waiting_for_labels":
                raise UserError(f"{p.name}: the run waits for labels; the study needs al.oracle=simulated")
            eta.record(p, time.time() - t_run)
            say(f"{head} done in {_hms(time.time() - t_run)}: test macro-F1 "
                f"{summary['test']['macro_f1']:.4f} ({summary['labeled']} labels, {summary['steps']} steps)")
        results.append(run_record(p, summary))
        on_result(results)
    say(f"[study] {len(plan)} runs done in {_hms(time.time() - t0)}")
    return results


def annotated_per_round(summary: dict) -> list[list[int]]:
    """True labels of the rows the selectors sent to annotation, counted per class, one list per round in
    round order: whether the picks find the rare class is what decides macro-F1 on an imbalanced pool."""
    n = len(summary["test"].get("per_class_recall", []))
    rounds = []
    for _, picks in sorted(summary.get("picks", {}).items(), key=lambda kv: int(kv[0])):
        counts = [0] * n
        for q in picks:
            label = q.get("label")
            if label is not None and 0 <= int(label) < n:
                counts[int(label)] += 1
        rounds.append(counts)
    return rounds


def run_record(p: PlannedRun, summary: dict) -> dict:
    """What study.json keeps of one run."""
    rounds = annotated_per_round(summary)
    n_classes = len(summary["test"].get("per_class_recall", []))
    curve = [{"cycle": h["cycle"], "labeled": h["labeled"], "test_macro_f1": h["test"]["macro_f1"],
              "val_macro_f1": h["val"]["macro_f1"], "test_per_class_recall": h["test"].get("per_class_recall")}
             for h in summary.get("cycles", [])]
    return {"method": p.method, "seed": p.seed, "workdir": str(p.workdir), "labeled": summary["labeled"],
            "n_active": summary.get("n_active", 0),
            "annotated_per_class": [sum(r[c] for r in rounds) for c in range(n_classes)],  # over the rounds
            "annotated_per_round": rounds,
            "steps": summary["steps"],
            "wall_time_s": summary.get("wall_time_s"), "test": summary["test"], "val": summary["val"],
            "curve": curve, "config": summary.get("config", {})}


# ======================================================================================================
# Aggregation: pure functions of the run records
# ======================================================================================================
def mean_std(values: Sequence[float | None]) -> dict:
    """Mean and sample standard deviation (ddof=1; None below two values) of the values that exist."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else None, "n": len(v)}


def by_method(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(r["method"], []).append(r)
    return out


def aggregate(runs: list[dict]) -> dict:
    """method -> split -> metric -> mean/std/n over seeds."""
    return {m: {split: {k: mean_std([r[split].get(k) for r in rs]) for k in METRICS}
                for split in ("test", "val")} for m, rs in by_method(runs).items()}


def paired(runs: list[dict], reference: str = REFERENCE_METHOD) -> dict:
    """method -> metric -> mean/std/n of (method - reference) on the test split, over the seeds both ran."""
    groups = by_method(runs)
    ref = {r["seed"]: r for r in groups.get(reference, [])}
    out = {}
    for m, rs in groups.items():
        if m == reference or not ref:
            continue
        pairs = [(r, ref[r["seed"]]) for r in rs if r["seed"] in ref]
        out[m] = {k: mean_std([None if a["test"].get(k) is None or b["test"].get(k) is None
                               else a["test"][k] - b["test"][k] for a, b in pairs]) for k in METRICS}
    return out


def median_run(rs: list[dict]) -> dict:
    """The run at the (lower) median test macro-F1."""
    ordered = sorted(rs, key=lambda r: (r["test"]["macro_f1"], r["seed"]))
    return ordered[(len(ordered) - 1) // 2]


def _ms(s: dict, signed: bool = False) -> str:
    if s["mean"] is None:
        return "-"
    text = f"{s['mean']:+.4f}" if signed else f"{s['mean']:.4f}"
    return text + (f" ± {s['std']:.4f}" if s["std"] is not None else "")


def _span(values: list[int]) -> str:
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def render_markdown(meta: dict, runs: list[dict], reference: str = "") -> str:
    """study.md: provenance, the mean ± std table, the paired differences, the curves and every run."""
    agg, diff, groups = aggregate(runs), paired(runs), by_method(runs)
    order = [m for m in meta.get("methods", list(groups)) if m in groups]
    lines = [f"# Study `{meta.get('config', '')}`, preset `{meta.get('preset', '')}`", ""]
    if meta.get("command"):
        lines += [f"Command: `{meta['command']}`", ""]
    for key, label in (("machine", "Machine"), ("date", "Date"), ("data", "Data"), ("budget", "Budget")):
        if meta.get(key):
            lines.append(f"- {label}: {meta[key]}")
    planned = meta.get("planned_runs")
    lines += [f"- Runs finished: {len(runs)}" + (f" of {planned}" if planned else ""), "",
              ("Test metrics of each run's best-by-validation EMA weights at its end; mean ± sample std "
               "over seeds (n = seeds)."), "",
              "| method | n | labels | steps | " + " | ".join(METRIC_NAMES[k] for k in METRICS) + " |",
              "|---|---|---|---|" + "---|" * len(METRICS)]
    ref_rows = REFERENCES.get(reference, {}).get("rows", []) if reference else []

    def reference_lines() -> list[str]:
        return [f"| {row['title']} [1] | - | all | - | "
                + " | ".join(f"{row[k]:.3f}" if k in row else "-" for k in METRICS) + " |"
                for row in ref_rows]

    for m in order:
        rs = groups[m]
        lines.append(f"| {METHODS[m].title if m in METHODS else m} (`{m}`) | {len(rs)} | "
                     f"{_span([r['labeled'] for r in rs])} | {_span([r['steps'] for r in rs])} | "
                     + " | ".join(_ms(agg[m]["test"][k]) for k in METRICS) + " |")
        if m == "full_supervised":
            lines += reference_lines()
    if ref_rows and "full_supervised" not in order:
        lines += reference_lines()
    if ref_rows:
        lines += ["", (f"[1] {REFERENCES[reference]['source']}; not run here, printed as the outside "
                       f"reference for the every-label row.")]
    ref = REFERENCE_METHOD
    lines += ["", f"## Paired difference against `{ref}` (method - {ref}, same seed)", ""]
    if not diff:
        lines.append(f"`{ref}` has no finished run in this study, so there is nothing to pair with.")
    else:
        lines += [("Negative: BoostMIS (AUS+BUS) is better on that seed. Mean ± sample std over the n seeds "
                   "both ran."), "",
                  "| method | n | " + " | ".join(f"Δ {METRIC_NAMES[k]}" for k in METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for m in order:
            if m in diff:
                lines.append(f"| `{m}` | {diff[m]['macro_f1']['n']} | "
                             + " | ".join(_ms(diff[m][k], signed=True) for k in METRICS) + " |")
    curves = {m: groups[m] for m in order if any(len(r["curve"]) > 1 for r in groups[m])}
    if curves:
        width = max(len(r["curve"]) for rs in curves.values() for r in rs)
        lines += ["", "## Active-learning curves (mean test macro-F1 over seeds after each cycle)", "",
                  "| method | " + " | ".join(f"cycle {i}" for i in range(width)) + " |", "|---|" + "---|" * width]
        for m, rs in curves.items():
            cells = []
            for i in range(width):
                pts = [r["curve"][i] for r in rs if len(r["curve"]) > i]
                s = mean_std([p["test_macro_f1"] for p in pts])
                cells.append(f"{_span([p['labeled'] for p in pts])} labels: {_ms(s)}" if pts else "")
            lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
        lines += picks_table(curves, width)
    lines += ["", "## Every run", "",
              "| method | seed | labels | steps | " + " | ".join(METRIC_NAMES[k] for k in METRICS)
              + " | val macro-F1 | test recall per class | annotated per class | wall s |",
              "|---|---|---|---|" + "---|" * len(METRICS) + "---|---|---|---|"]
    for m in order:
        for r in sorted(groups[m], key=lambda r: r["seed"]):
            t = r["test"]
            rec = ", ".join(f"{x:.3f}" for x in t.get("per_class_recall", []))
            ann = ", ".join(str(n) for n in r.get("annotated_per_class") or []) if r.get("n_active") else "-"
            lines.append(f"| `{m}` | {r['seed']} | {r['labeled']} | {r['steps']} | "
                         + " | ".join("-" if t.get(k) is None else f"{t[k]:.4f}" for k in METRICS)
                         + f" | {r['val']['macro_f1']:.4f} | {rec} | {ann} | "
                         + ("-" if r.get("wall_time_s") is None else f"{r['wall_time_s']:.0f}") + " |")
    plots = meta.get("plots", [])
    if plots:
        lines += [""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def picks_table(curves: dict[str, list[dict]], width: int) -> list[str]:
    """study.md lines: per active-learning cycle, the true classes of the rows annotated in the round that
    led to it (summed over seeds) and the mean test recall per class after it: where the picks went and
    what that did to each class."""
    lines = ["", ("## Picks and test recall per class after each cycle (picks: true classes of the round's "
                  "annotated rows, summed over seeds; recall: mean over seeds)"), "",
             "| method | " + " | ".join(f"cycle {i}" for i in range(width)) + " |", "|---|" + "---|" * width]
    for m, rs in curves.items():
        cells = []
        for i in range(width):
            rec = [r["curve"][i].get("test_per_class_recall") for r in rs if len(r["curve"]) > i]
            rec = [x for x in rec if x]
            cell = ("recall " + "/".join(f"{np.mean([x[c] for x in rec]):.3f}" for c in range(len(rec[0])))
                    if rec else "")
            rounds = [r.get("annotated_per_round") or [] for r in rs]
            if i > 0 and any(len(rd) >= i for rd in rounds):
                got = [rd[i - 1] for rd in rounds if len(rd) >= i]
                cell = "picks " + "/".join(str(sum(g[c] for g in got)) for c in range(len(got[0]))) + "; " + cell
            cells.append(cell)
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    return lines


# ======================================================================================================
# Plots
# ======================================================================================================
def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    from boostmis_jax.fsutil import atomic_write

    fig.tight_layout(h_pad=1.5)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")


def plot_f1_vs_labels(path: Path, runs: list[dict], order: list[str]) -> None:
    """Test macro-F1 against labels: AL arms their per-cycle mean curve, SSL arms one point (± std),
    the every-label row a dashed line (it sits far to the right of the rest)."""
    groups = by_method(runs)
    fig = _figure((7.5, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    for m in [m for m in order if m in groups]:
        rs = groups[m]
        width = max(len(r["curve"]) for r in rs)
        xs, ys, es = [], [], []
        for i in range(width):
            pts = [r["curve"][i] for r in rs if len(r["curve"]) > i]
            s = mean_std([p["test_macro_f1"] for p in pts])
            if s["mean"] is not None:
                xs.append(float(np.mean([p["labeled"] for p in pts])))
                ys.append(s["mean"])
                es.append(s["std"] or 0.0)
        if m == "full_supervised" and ys:
            ax.axhline(ys[-1], ls="--", color="gray", label=f"{m} ({int(xs[-1])} labels)")
            continue
        if width > 1:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m)
        else:
            ax.errorbar(xs[-1:], ys[-1:], yerr=es[-1:], marker="s", ls="none", capsize=3, label=m)
    ax.set_xlabel("labeled samples")
    ax.set_ylabel("test macro-F1 (mean ± std over seeds)")
    ax.set_title("test macro-F1 against labels")
    ax.grid(True, alpha=0.3)
    if groups:
        ax.legend(fontsize=8, loc="best")
    _save(fig, path)


def plot_confusions(path: Path, runs: list[dict], order: list[str], class_names: list[str]) -> None:
    """One panel per method: the test confusion matrix of its median run by test macro-F1."""
    groups = by_method(runs)
    methods = [m for m in order if m in groups]
    if not methods:
        return
    cols = min(4, len(methods))
    rows = math.ceil(len(methods) / cols)
    k = len(class_names)
    side = max(2.8, 0.35 * k + 1.6)
    fig = _figure((cols * side, rows * side + 0.3))
    for j, m in enumerate(methods):
        r = median_run(groups[m])
        cm = np.asarray(r["test"]["confusion_matrix"], np.int64)
        ax = fig.add_subplot(rows, cols, j + 1)
        ax.imshow(cm, cmap="Blues", vmin=0)
        for a in range(cm.shape[0]):
            for b in range(cm.shape[1]):
                ax.text(b, a, str(cm[a, b]), ha="center", va="center", fontsize=7 if k > 4 else 9,
                        color="white" if cm[a, b] > cm.max() / 2 else "black")
        ax.set_xticks(range(k), labels=class_names, fontsize=7, rotation=45 if k > 4 else 0)
        ax.set_yticks(range(k), labels=class_names, fontsize=7)
        ax.set_title(f"{m}\nseed {r['seed']}, macro-F1 {r['test']['macro_f1']:.3f}", fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    _save(fig, path)


# ======================================================================================================
# The study: plan, run, report
# ======================================================================================================
def machine() -> str:
    import jax

    devs = jax.devices()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{platform.system()} {platform.machine()}, {cores} CPU cores, {len(devs)} "
            f"{jax.default_backend()} device(s) ({devs[0].device_kind}), jax {jax.__version__}")


def write_outputs(workdir: Path, meta: dict, runs: list[dict], class_names: list[str]) -> None:
    """DIR/study.json, DIR/study.md and the PNGs, from the run records so far."""
    from boostmis_jax.fsutil import atomic_write_text
    from boostmis_jax.reporting import to_jsonable

    order = meta["methods"]
    plot_f1_vs_labels(workdir / "f1_vs_labels.png", runs, order)
    plot_confusions(workdir / "confusion_matrices.png", runs, order, class_names)
    meta = {**meta, "plots": ["f1_vs_labels.png", "confusion_matrices.png"]}
    doc = {"study": meta, "runs": runs, "aggregate": aggregate(runs), "paired": paired(runs),
           "reference": REFERENCES.get(meta.get("reference", ""), {})}
    atomic_write_text(workdir / "study.json", json.dumps(to_jsonable(doc), indent=2, allow_nan=False) + "\n")
    atomic_write_text(workdir / "study.md", render_markdown(meta, runs, meta.get("reference", "")))


def run_study(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike, *, command: str = "",
              config_name: str = "", dry_run: bool = False, say=print) -> dict:
    """Plan the grid, run (or skip) every run through train.run, write the study outputs; returns study.json's
    content as a dict (the plan only, with dry_run)."""
    from boostmis_jax import defaults, parallel
    from boostmis_jax.data import load_dataset

    workdir = Path(workdir)
    if str(cfg.study.preset) not in PRESETS:
        raise UserError(f"study.preset={cfg.study.preset!r}: choose one of {list(PRESETS)}")
    cfg = copy.deepcopy(cfg)
    prepare_data(cfg, workdir)
    base = run_base(cfg)
    defaults.validate(base)
    parallel.init_distributed(**base.parallel)  # as train.run does; before any device is touched
    ds = load_dataset(base.data)
    plan = make_plan(cfg, workdir, len(ds.train_y))
    for p in plan:  # every arm's config, up front: a bad value fails before the first run, not hours in
        try:
            defaults.validate(p.cfg)
        except UserError as e:
            raise UserError(f"study method {p.method}: {e}") from None
    methods = parse_methods(cfg.study.methods)
    b = budget_plan(base)
    meta = {"config": config_name, "preset": str(cfg.study.preset), "command": command,
            "methods": methods, "seeds": parse_seeds(cfg.study.seeds), "reference": str(cfg.study.reference),
            "machine": machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "data": f"{ds.name} ({ds.kind}): train {len(ds.train_y)} / val {len(ds.val_y)} / test "
                    f"{len(ds.test_y)}, {ds.num_classes} classes, train per class "
                    f"{np.bincount(ds.train_y, minlength=ds.num_classes).tolist()}",
            "budget": f"{b['initial']} initial labels + {b['cycles']} cycles x {b['round']} = {b['labels']} "
                      f"labels (every train row for full_supervised), {b['steps']} steps",
            "planned_runs": len(plan)}
    main = parallel.is_main_process()
    say(f"[study] {len(plan)} runs ({len(methods)} methods x {len(meta['seeds'])} seeds) in {workdir}; "
        f"{meta['budget']}")
    if dry_run:
        for p in plan:
            how = (f"{p.cfg.al.selectors} K={p.cfg.al.budget} x {p.cfg.al.cycles} cycles"
                   if METHODS[p.method].active else "labels drawn up front")
            say(f"  {p.name}: threshold={p.cfg.ssl.threshold}, {how}, {p.labels} labels, {p.steps} steps "
                f"-> {p.workdir}")
        return {"study": meta, "plan": [{"method": p.method, "seed": p.seed, "workdir": str(p.workdir),
                                         "labels": p.labels, "steps": p.steps} for p in plan]}

    class_names = list(ds.class_names)
    del ds  # the runs load their own copy

    def on_result(runs: list[dict]) -> None:
        if main:
            write_outputs(workdir, meta, runs, class_names)

    runs = execute(plan, on_result, say=say)
    if main:
        say(f"[study] wrote {workdir}/study.json, study.md, f1_vs_labels.png, confusion_matrices.png")
        say((workdir / "study.md").read_text())
    return {"study": meta, "runs": runs}


# ======================================================================================================
# CLI
# ======================================================================================================
def resolve_preset(cfg: ml_collections.ConfigDict | None, filename: str, overrides: dict
                   ) -> ml_collections.ConfigDict | None:
    """--config.study.preset=P rebuilds the config file's get_config(P), then re-applies every override (the
    preset sets many keys at once; the user's own overrides still win)."""
    preset = overrides.get("study.preset")
    if preset is None:
        return cfg
    if preset not in PRESETS:
        raise UserError(f"study.preset={preset!r}: choose one of {list(PRESETS)}")
    path = filename.split(":", 1)[0]
    spec = importlib.util.spec_from_file_location("_study_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not inspect.signature(module.get_config).parameters:
        raise UserError(f"{path}: get_config() takes no preset argument, so study.preset cannot rebuild it; "
                        f"define get_config(preset='reduced')")
    new = module.get_config(preset)
    for key, value in overrides.items():
        node = new
        *parents, leaf = key.split(".")
        for k in parents:
            node = node[k]
        node[leaf] = value
    return new


def main() -> None:
    from absl import app, flags, logging
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, "Path to a configs/study_*.py file "
                                             "(path:full selects the full preset).", lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, "Study directory: runs/<method>/seed<k>, study.json, "
                                                  "study.md, PNGs; re-use it to resume.")
    dry_run = flags.DEFINE_bool("dry_run", False, "Print the planned runs and exit.")

    def die(msg: str) -> None:
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)

    def one_line(e: BaseException) -> str:
        return (" ".join(str(e).split()) or type(e).__name__)[:300]

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            die(one_line(e) + "; check the flag name and value (python -m boostmis_jax.study --help)")
        except (KeyError, AttributeError, ValueError, TypeError, OSError, SyntaxError) as e:
            from boostmis_jax.config_file import config_file_error, config_path
            where = config_file_error(e, config_path(argv))
            if where:
                die(f"{where}; fix that line")
            die(one_line(e) + "; fix the --config file or override (keys: boostmis_jax/defaults.py, "
                "study.study_section)")
        return []

    def run(argv: list[str]) -> None:
        from boostmis_jax.train import Interrupted

        logging.set_verbosity(logging.WARNING)
        if len(argv) > 1:
            die(f"unexpected arguments {argv[1:]}; pass options as --config.KEY=VALUE")
        try:
            cfg = config.value
            if cfg is not None:
                cfg.get("seed")
        except Exception as e:  # noqa: BLE001  a user's config file can raise anything
            die(f"--config could not be loaded: {one_line(e)}; pass a configs/study_*.py with get_config()")
        if cfg is None:
            die("--config is required, e.g. --config configs/study_pneumonia.py")
        if "study" not in cfg:
            die("--config has no study section; use a configs/study_*.py (main runs a single config)")
        if not workdir.value:
            die("--workdir is required, e.g. --workdir runs/study_pneumonia")
        name = config_flags.get_config_filename(flags.FLAGS["config"])
        try:
            from boostmis_jax.config_file import check_against_defaults
            check_against_defaults(run_base(cfg), name)
            cfg = resolve_preset(cfg, name, config_flags.get_override_values(flags.FLAGS["config"]))
            run_study(cfg, workdir.value, command=" ".join(["python -m boostmis_jax.study", *sys.argv[1:]]),
                      config_name=name, dry_run=dry_run.value)
        except UserError as e:
            die(str(e))
        except Interrupted as e:
            print(f"[study] {e}; checkpoint saved, re-run the same command to resume", file=sys.stderr)
            sys.exit(128 + e.signum)

    from boostmis_jax.xla_env import prepare_process
    prepare_process()
    app.run(run, flags_parser=parse)


if __name__ == "__main__":
    main()
