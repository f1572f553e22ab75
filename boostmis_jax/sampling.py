"""Which rows go into which step: a pure function of (seed, cycle, stream, step).

Data order never depends on wall clock, device count or how often the run was interrupted, which is what
makes a resumed run identical to a straight one.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


def _permutation(n: int, seed: int, cycle: int, stream: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, cycle, stream, epoch]).permutation(n)


_perm = lru_cache(maxsize=8)(_permutation)           # the labeled and unlabeled streams' epochs
_class_perm = lru_cache(maxsize=512)(_permutation)   # class-balanced batches: a few-row class turns over
#                                                      epochs every step; its permutations are small


def rows_for_step(pool: np.ndarray, batch: int, local_step: int, *, seed: int, cycle: int,
                  stream: int) -> np.ndarray:
    """`batch` rows of `pool` for step `local_step` of a cycle: epochs of seeded permutations, no repeats
    within an epoch, epochs chained seamlessly (a batch may straddle two epochs)."""
    return _draws(pool, local_step * batch + np.arange(batch), seed=seed, cycle=cycle, stream=stream)


def _draws(rows: np.ndarray, draws: np.ndarray, *, seed: int, cycle: int, stream: int,
           perm=_perm) -> np.ndarray:
    """rows[...] for the draw numbers `draws` of a chain of seeded epochs over `rows`."""
    epoch, offset = np.divmod(draws, len(rows))
    out = np.empty(len(draws), np.int64)
    for e in np.unique(epoch):
        sel = epoch == e
        out[sel] = rows[perm(len(rows), seed, cycle, stream, int(e))[offset[sel]]]
    return out


LABELED_SAMPLINGS = ("uniform", "class_balanced")


def balanced_rows_for_step(pool: np.ndarray, labels: np.ndarray, batch: int, local_step: int, *, seed: int,
                           cycle: int, stream: int) -> np.ndarray:
    """Like `rows_for_step`, each class drawn equally often: slot j of step s goes to the
    ((s * batch + j) mod C)-th class present in `pool` (by labels[pool]), and each class runs its own chain
    of seeded epochs. A rare class's few labels are then seen as often as the common class's many (class-
    balanced sampling: what lets ten picked minority scans count when 1 pool row in 50 is one)."""
    y = np.asarray(labels)[pool]
    if len(pool) == 0 or y.min() < 0:
        raise ValueError("balanced_rows_for_step: needs a non-empty pool of labeled rows (labels >= 0)")
    classes = np.unique(y)
    k, which = np.divmod(local_step * batch + np.arange(batch), len(classes))
    out = np.empty(batch, np.int64)
    for i, c in enumerate(classes):
        sel = which == i
        if sel.any():
            out[sel] = _draws(pool[y == c], k[sel], seed=seed, cycle=cycle,
                              stream=stream + 1000 * (int(c) + 1), perm=_class_perm)
    return out
