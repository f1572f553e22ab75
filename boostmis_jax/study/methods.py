"""The arms of a study (each a preset of the run config), the study section's keys and the presets.

Equal arms: every arm below except `full_supervised` is one active-learning run with the same cycle
schedule (train.steps, then al.cycles x al.steps_per_cycle, a cosine restart per cycle, validation every
train.eval_every steps, best-by-validation weights per cycle), the same initial labeled set (drawn by
data.label_balance from the seed) and the same labels per round. They differ only in the pseudo-label
threshold and in how a round's rows are picked:

- SSL-only arms (supervised, fixmatch, flexmatch, freematch, boostmis_ssl) pick with `random` over ALL
  unlabeled rows (al.candidates=all): the method trained at each budget of the curve, on nested random label
  sets drawn without looking at labels;
- `random_all` is the passive control (BoostMIS threshold, random over all rows); `random_pool` picks at
  random in the low-confidence pool the paper's selectors draw from; `balanced_pool` picks at random in that
  pool under BUS's per-class quotas by estimated class (class-balanced random sampling);
- `boostmis` is the paper-faithful arm (AUS + BUS in the low-confidence pool), always kept;
- `recommended` takes its selector string from RECOMMENDED_SELECTORS (one line, below): AUS+BUS with BUS's
  quotas by ESTIMATED true class (al.balance=estimated, the run default), the one change to the paper's arm;
- `typiclust_staged` is the previous recommendation (typicality while a class has < 20 labels, then AUS+BUS,
  cluster batches), kept in the tables: it lost to the paper's arm on the 10% minority cut (typicality picks
  the majority class; docs/results.md).

Cold-start arms (`*_first*`) replace the initial random draw by a first round picked WITHOUT labels: a
SimCLR stage of study.selfsup_steps on the pool, then data.num_labels rows by `al.initial` on its
embedding (a zero-label run: data.num_labels=0, al.initial_budget=the initial labels, one more round), and
later rounds at random over all rows, so each differs from `random_all` only in its first picks and, with
`_init`, in starting the task model from the self-supervised backbone (selfsup.init).

`full_supervised` (every train label, one stage of the same total steps) is an outside reference, not an
equal arm.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import ml_collections

from boostmis_jax.errors import UserError

# The recommended selection: the one line the lead sets at merge (the run defaults: al.balance=estimated).
RECOMMENDED_SELECTORS, RECOMMENDED_OVERRIDES = "aus+bus", {}

REFERENCE_METHOD = "boostmis"       # the arm every other method is paired against
PASSIVE_METHOD = "random_all"       # the passive control every method is also paired against
CORE_METHODS = ("boostmis", "recommended", "random_all", "random_pool", "fixmatch", "supervised")
COLD_METHODS = ("random_all", "typiclust_first", "typiclust_first_init", "random_first_init")
PRESETS = ("cpu", "gpu", "reduced", "full")
PRIMARY_DEFAULT = "aubc/balanced_accuracy"


@dataclasses.dataclass(frozen=True)
class Method:
    """How one arm differs from the base config: its threshold, selector string, candidate pool and any
    other keys (`overrides`, dotted). `all_labels`: every train row up front, no rounds (an outside
    reference)."""

    title: str
    threshold: str
    selectors: str = "random"
    candidates: str = "all"
    overrides: tuple[tuple[str, Any], ...] = ()
    all_labels: bool = False
    first: str = ""           # cold start: the initial labels picked by this al.initial, no label read
    selfsup: bool = False     # cold start: a self-supervised stage (study.selfsup_steps) before the picks
    init: bool = False        # cold start: the task model starts from the self-supervised backbone


def _ssl(title: str, threshold: str) -> Method:
    return Method(title, threshold, "random", "all")


METHODS: dict[str, Method] = {
    "supervised": _ssl("supervised only", "none"),
    "fixmatch": _ssl("FixMatch (fixed 0.95)", "fixed"),
    "flexmatch": _ssl("FlexMatch", "flexmatch"),
    "freematch": Method("FreeMatch (fairness 0.01)", "freematch", "random", "all",
                        (("ssl.fairness_weight", 0.01),)),
    "boostmis_ssl": _ssl("BoostMIS threshold, random labels", "boostmis"),
    # the paper's BUS balances by PREDICTED class; our estimated-class quotas are not the paper's
    "boostmis": Method("BoostMIS (AUS+BUS)", "boostmis", "aus+bus", "low_confidence",
                       (("al.balance", "predicted"),)),
    "recommended": Method(f"recommended ({RECOMMENDED_SELECTORS}, estimated-class quotas)", "boostmis",
                          RECOMMENDED_SELECTORS,
                          "low_confidence", tuple(RECOMMENDED_OVERRIDES.items())),
    "typiclust_staged": Method("typiclust>aus+bus, cluster batches", "boostmis", "typiclust>aus+bus",
                               "low_confidence", (("al.batch", "cluster"),)),
    "random_all": Method("random over all rows (passive)", "boostmis", "random", "all"),
    "random_pool": Method("random in the low-confidence pool", "boostmis", "random", "low_confidence"),
    # random in the pool under BUS's estimated-class quotas: random_pool's spread with the paper's balancing
    "balanced_pool": Method("class-balanced random in the pool (estimated-class quotas)", "boostmis",
                            "balanced_random", "low_confidence"),
    "aus_only": Method("AUS only", "boostmis", "aus", "low_confidence"),
    "bus_only": Method("BUS only", "boostmis", "bus", "low_confidence"),
    "entropy_al": Method("entropy picks", "boostmis", "entropy", "low_confidence"),
    "coreset_al": Method("core-set picks", "boostmis", "coreset", "low_confidence"),
    "typiclust_first": Method("TypiClust first picks on SimCLR, then random", "boostmis", first="typiclust",
                              selfsup=True),
    "typiclust_first_init": Method("TypiClust first picks + SimCLR init, then random", "boostmis",
                                   first="typiclust", selfsup=True, init=True),
    "random_first_init": Method("random first picks + SimCLR init, then random", "boostmis", first="random",
                                selfsup=True, init=True),
    "full_supervised": Method("every train label, supervised", "none", "", "all", all_labels=True),
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
                  data: str = "", primary: str = PRIMARY_DEFAULT) -> ml_collections.ConfigDict:
    """The `study` section a study config adds to its run config (every key the study reads)."""
    s = ml_collections.ConfigDict()
    s.methods = ",".join(methods)       # comma-joined names from study.METHODS, or all | core | cold
    s.seeds = ",".join(str(int(k)) for k in seeds)   # comma-joined; each seed is a full run per method
    s.preset = preset                   # cpu (2 CPU cores, ~90 min) | gpu (one H200) | reduced | full
    s.primary = primary                 # the primary endpoint, fixed before the study runs: aubc/<metric>
    #                                     or final/<metric>; a workdir refuses a different one
    s.workers = "auto"                  # concurrent runs: auto (1 on CPU; on a GPU from free memory and
    #                                     CPU cores) or an integer
    s.reference = reference             # '' | medmnist_v2_pneumonia: published rows beside full_supervised
    s.data = data                       # '' | breast_cancer_mescc | digits_longtail: written into DIR/data
    s.longtail_classes = 6              # digits_longtail: digits 0..C-1 (six, as MESCC's grades)
    s.longtail_ratio = 10.0             # digits_longtail: largest / smallest train class
    s.selfsup_steps = 1000              # cold-start arms (*_first*): SimCLR steps before the first picks
    s.train_minority = 0.0              # > 0: a MedMNIST npz's train split with its rarest class cut to
    #                                     this share of train (val/test untouched), written into DIR/data;
    #                                     the cut is drawn with the run's seed (one cut per seed)
    return s


def parse_methods(text: str) -> list[str]:
    """Comma-joined names; 'all' = every arm, 'core' = CORE_METHODS, 'cold' = COLD_METHODS."""
    groups = {"all": tuple(METHODS), "core": CORE_METHODS, "cold": COLD_METHODS}
    names = list(groups.get(text.strip(), [m.strip() for m in text.split(",") if m.strip()]))
    unknown = [m for m in names if m not in METHODS]
    if not names or unknown:
        raise UserError(f"study.methods: unknown or empty {unknown or names}; use comma-joined names from "
                        f"{list(METHODS)} (or all, core, cold)")
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
