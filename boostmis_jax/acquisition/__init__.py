"""Informative active annotation: score the unlabeled pool in one jitted pass, pick a budget per selector.

Selectors (registry SELECTORS): aus (VAT instability at a per-pool calibrated radius), bus (density-weighted
entropy, class-balanced picks), random, entropy, margin, least_confidence, coreset (greedy k-center),
typiclust (typical rows of uncovered clusters), probcover (max coverage of purity-sized balls), badge
(k-means++ on gradient embeddings). The loop builds one scorer per run
(`make_scorer`) and calls `acquire` each cycle.
"""
from boostmis_jax.acquisition.badge import badge_select
from boostmis_jax.acquisition.coreset import coreset_select
from boostmis_jax.acquisition.coverage import probcover_select
from boostmis_jax.acquisition.density import knn_density
from boostmis_jax.acquisition.scoring import (
    BATCHES,
    CANDIDATES,
    DENSITIES,
    SELECTORS,
    PoolContext,
    Scorer,
    make_scorer,
    parse_selectors,
    parse_stages,
    register_selector,
    round_size,
)
from boostmis_jax.acquisition.selection import acquire, acquire_round, select
from boostmis_jax.acquisition.typicality import typiclust_select

BALANCES = ("estimated", "predicted")

__all__ = [
    "BALANCES",
    "BATCHES",
    "CANDIDATES",
    "DENSITIES",
    "SELECTORS",
    "PoolContext",
    "Scorer",
    "acquire",
    "acquire_round",
    "badge_select",
    "parse_stages",
    "probcover_select",
    "round_size",
    "typiclust_select",
    "coreset_select",
    "knn_density",
    "make_scorer",
    "parse_selectors",
    "register_selector",
    "select",
]
