"""The paper's comparison as one command: a grid of (method x seed) runs on equal arms, each through the same
`train.run` as `main`, then paired statistics, tables and plots.

  python -m boostmis_jax.study --config configs/study_pneumonia.py --workdir DIR [--config.KEY=VALUE ...]
  python -m boostmis_jax.study --config configs/study_pneumonia.py --workdir DIR --config.study.preset=gpu
  python -m boostmis_jax.study ... --dry_run          # print the planned runs and exit

A study config is a run config (built on `defaults.get_config`) plus a `study` section (`study_section`).
Every (method, seed) gets its own workdir DIR/runs/<method>/seed<k>: a finished run is skipped on a rerun, an
unfinished one resumes. DIR/study.json, DIR/study.md and the PNGs are rewritten after every finished run from
every finished record, so they always show what has finished and never shrink.

Parts: `methods` (arms, presets, the study keys), `cases` (generated data), `plan` (one config per run),
`execute` (skip/resume, workers on one accelerator), `stats` (paired statistics), `report` (endpoints,
study.json, study.md), `plots`, `cli` (run_study and the command line).

Equal arms (see `methods`): every arm except full_supervised runs the same cycle schedule from the same
initial labeled set (drawn at random, data.label_balance=random in the study configs) with the same labels
per round, so arms differ only in threshold and selection. What still differs: the SSL-only arms pick at
random over all rows (by design, that is what "SSL at each budget" means), FreeMatch adds its fairness loss,
and full_supervised is one stage over every label.
"""
from boostmis_jax.study.cases import (
    PREPARERS,
    longtail_counts,
    prepare_data,
    write_breast_cancer_mescc,
    write_digits_longtail,
    write_minority_cut,
)
from boostmis_jax.study.methods import (
    COLD_METHODS,
    CORE_METHODS,
    METHODS,
    PASSIVE_METHOD,
    PRESETS,
    RECOMMENDED_SELECTORS,
    REFERENCE_METHOD,
    REFERENCES,
    Method,
    parse_methods,
    parse_seeds,
    study_section,
)
from boostmis_jax.study.plan import PlannedRun, budget_plan, check_study, make_plan, method_config, run_base

__all__ = ["COLD_METHODS", "CORE_METHODS", "METHODS", "PASSIVE_METHOD", "PREPARERS", "PRESETS",
           "RECOMMENDED_SELECTORS",
           "REFERENCES", "REFERENCE_METHOD", "Method", "PlannedRun", "budget_plan", "check_study",
           "longtail_counts", "make_plan", "method_config", "parse_methods", "parse_seeds", "prepare_data",
           "run_base", "study_section", "write_breast_cancer_mescc", "write_digits_longtail",
           "write_minority_cut"]
