"""Informative active annotation: score the unlabeled pool in one jitted pass, pick a budget per selector.

Selectors (registry SELECTORS): aus (VAT instability), bus (density-weighted entropy, class-balanced picks),
random, entropy, margin, least_confidence, coreset (greedy k-center). The loop builds one scorer per run
(`make_scorer`) and calls `acquire` each cycle.
"""
from boostmis_jax.acquisition.coreset import coreset_select
from boostmis_jax.acquisition.density import knn_density
from boostmis_jax.acquisition.scoring import (
    CANDIDATES,
    DENSITIES,
    SELECTORS,
    PoolContext,
    Scorer,
    make_scorer,
    parse_selectors,
    register_selector,
)
from boostmis_jax.acquisition.selection import acquire, select

__all__ = [
    "CANDIDATES",
    "DENSITIES",
    "SELECTORS",
    "PoolContext",
    "Scorer",
    "acquire",
    "coreset_select",
    "knn_density",
    "make_scorer",
    "parse_selectors",
    "register_selector",
    "select",
]
