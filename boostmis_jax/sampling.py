"""Which rows go into which step: a pure function of (seed, cycle, stream, step).

Data order never depends on wall clock, device count or how often the run was interrupted, which is what
makes a resumed run identical to a straight one.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def _perm(n: int, seed: int, cycle: int, stream: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, cycle, stream, epoch]).permutation(n)


def rows_for_step(pool: np.ndarray, batch: int, local_step: int, *, seed: int, cycle: int,
                  stream: int) -> np.ndarray:
    """`batch` rows of `pool` for step `local_step` of a cycle: epochs of seeded permutations, no repeats
    within an epoch, epochs chained seamlessly (a batch may straddle two epochs)."""
    n = len(pool)
    pos = local_step * batch + np.arange(batch)
    epoch, offset = np.divmod(pos, n)
    out = np.empty(batch, np.int64)
    for e in np.unique(epoch):
        sel = epoch == e
        out[sel] = pool[_perm(n, seed, cycle, stream, int(e))[offset[sel]]]
    return out
