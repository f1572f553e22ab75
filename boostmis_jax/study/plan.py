"""The plan: one run config per (method, seed), every arm on the same label budget and cycle schedule."""
from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import ml_collections

from boostmis_jax.errors import UserError
from boostmis_jax.study.methods import METHODS, REFERENCE_METHOD, parse_methods, parse_seeds


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


def _n_selectors(method: str, selectors: str) -> int:
    """Selectors that share one round: those of the last stage (`typiclust>aus+bus` -> 2; an earlier stage
    labels the same number of rows per round, acquisition.round_size)."""
    from boostmis_jax.acquisition import parse_stages

    try:
        return len(parse_stages(selectors)[-1])
    except (UserError, ValueError, KeyError) as e:
        raise UserError(f"study method {method}: selectors {selectors!r} are not available in this build "
                        f"({' '.join(str(e).split())[:160]}); drop {method} from study.methods") from None


def budget_plan(base: ml_collections.ConfigDict) -> dict:
    """Labels per round, final labels and total steps of the BoostMIS arm, which every arm matches."""
    cycles, first = int(base.al.cycles), int(base.train.steps)
    later = int(base.al.steps_per_cycle) or first
    round_size = int(base.al.budget) * _n_selectors(REFERENCE_METHOD, METHODS[REFERENCE_METHOD].selectors)
    return {"initial": int(base.data.num_labels), "round": round_size, "cycles": cycles,
            "labels": int(base.data.num_labels) + cycles * round_size, "steps": first + cycles * later,
            "first_steps": first, "cycle_steps": later}


def _set(c: ml_collections.ConfigDict, key: str, value, method: str) -> None:
    *parents, leaf = key.split(".")
    node = c
    for k in parents:
        node = node[k] if k in node else None
        if node is None:
            break
    if node is None or leaf not in node:
        raise UserError(f"study method {method}: sets {key}, which this build has no key for; drop {method} "
                        f"from study.methods")
    node[leaf] = value


def method_config(base: ml_collections.ConfigDict, method: str, seed: int, n_train: int, *,
                  selfsup_steps: int = 0) -> tuple[ml_collections.ConfigDict, int, int]:
    """(run config, final labels, total steps) of `method` at `seed` under the equal-arms rules."""
    from boostmis_jax.thresholds import freematch_momentum

    m, b = METHODS[method], budget_plan(base)
    c = copy.deepcopy(base)
    c.seed = int(seed)
    c.ssl.threshold = m.threshold
    for key, value in m.overrides:
        _set(c, key, value, method)
    if m.threshold == "freematch":
        c.ssl.free_momentum = freematch_momentum(b["steps"])
    if m.all_labels:
        c.data.num_labels = n_train
        if "label_balance" in c.data:
            c.data.label_balance = "stratified"   # every row: nothing to draw
        c.al.cycles = 0
        c.al.steps_per_cycle = 0
        c.train.steps = b["steps"]
        return c, n_train, b["steps"]
    c.al.selectors = m.selectors
    c.al.candidates = m.candidates
    c.al.budget = b["round"] // _n_selectors(method, m.selectors)
    if m.first:  # cold start: the same labels and steps, the first round picked with no label read
        c.data.num_labels = 0
        c.al.initial, c.al.initial_budget = m.first, b["initial"]
        c.al.cycles = b["cycles"] + 1                  # a zero-label run counts the first round as a cycle
        c.selfsup.steps = int(selfsup_steps) if m.selfsup else 0
        c.selfsup.init = bool(m.init)
    return c, b["labels"], b["steps"]


def make_plan(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike, n_train: int,
              data_paths: dict[int, str] | None = None) -> list[PlannedRun]:
    """Every (method, seed) run of the study, seed-major so a partial study has whole seeds first.
    `data_paths`: seed -> data.path where a case writes one data cut per seed."""
    base = run_base(cfg)
    methods, seeds = parse_methods(cfg.study.methods), parse_seeds(cfg.study.seeds)
    check_study(base, methods, n_train)
    plan = []
    for seed in seeds:
        for method in methods:
            c, labels, steps = method_config(base, method, seed, n_train,
                                             selfsup_steps=int(cfg.study.get("selfsup_steps", 0)))
            if data_paths and seed in data_paths:
                c.data.path = data_paths[seed]
            plan.append(PlannedRun(method, seed, Path(workdir) / "runs" / method / f"seed{seed}", c, labels,
                                   steps))
    return plan


def check_study(base: ml_collections.ConfigDict, methods: list[str], n_train: int) -> None:
    """What would make the arms incomparable or the study stall, in one line each."""
    rounds = [m for m in methods if not METHODS[m].all_labels]
    if rounds and int(base.al.cycles) < 1:
        raise UserError(f"study: methods {rounds} run on the budget curve but al.cycles=0; set "
                        f"--config.al.cycles=3 (or keep only full_supervised)")
    if str(base.al.oracle) != "simulated":
        raise UserError(f"study: al.oracle={base.al.oracle!r} would wait for a person in every AL run; set "
                        f"--config.al.oracle=simulated (use main for a files-oracle run)")
    if str(base.data.split_file):
        raise UserError("study: data.split_file fixes the labeled rows of every seed, so seeds would not be "
                        "independent draws; set --config.data.split_file=''")
    b = budget_plan(base)
    cold = [m for m in methods if METHODS[m].first]
    if cold and b["initial"] < 1:
        raise UserError(f"study: methods {cold} pick the data.num_labels initial rows without labels, but "
                        f"data.num_labels=0; set --config.data.num_labels=48 (the first round's size)")
    if b["labels"] > n_train:
        raise UserError(f"study: the arms end with {b['labels']} labels (data.num_labels + al.cycles x "
                        f"al.budget x 2) but train has {n_train} rows; lower --config.al.budget or al.cycles")
