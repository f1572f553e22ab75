"""Informative active annotation: score the unlabeled pool in one jitted pass, pick a budget per selector.

Selectors (registry SCORERS): aus (VAT instability), bus (density-weighted entropy, class-balanced picks),
random, entropy, margin, least_confidence, coreset (greedy k-center). The AL loop calls `acquire`.
"""
from boostmis_jax.acquisition.config import DEFAULTS, AcqConfig, read_config
from boostmis_jax.acquisition.coreset import coreset_select
from boostmis_jax.acquisition.density import knn_density
from boostmis_jax.acquisition.pool import pool_outputs, vat_scores
from boostmis_jax.acquisition.scorers import SCORERS, PoolContext, register_scorer
from boostmis_jax.acquisition.scoring import score_pool
from boostmis_jax.acquisition.selection import acquire, select

__all__ = [
    "DEFAULTS",
    "SCORERS",
    "AcqConfig",
    "PoolContext",
    "acquire",
    "coreset_select",
    "knn_density",
    "pool_outputs",
    "read_config",
    "register_scorer",
    "score_pool",
    "select",
    "vat_scores",
]
