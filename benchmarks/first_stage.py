"""A run's first stage, trained once per workdir (a rerun restores it), handed to a selection benchmark with
what one scoring pass needs. Shared by selection.py and bus_density.py."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np


class FirstStage(NamedTuple):
    run: object        # train.Run: ds, scorer, pool
    book: object       # bookkeeping.Book: labeled rows, tau
    variables: dict    # the stage's best-by-validation EMA weights
    xs: object         # the pool, preprocessed on device
    valid: np.ndarray  # real (non-padded) pool rows
    labeled: np.ndarray


@contextlib.contextmanager
def first_stage(cfg, workdir: str):
    from boostmis_jax import train

    r, init = train.setup(cfg, Path(workdir), time.time())
    try:
        state, book = train.restore_or_start(r, init)
        if book.phase == "train":
            state = train.train_cycle(r, state, book)
            state = train.finish_cycle(r, state, book)
        xs, valid = r.pool()
        labeled = np.zeros(valid.shape, bool)
        labeled[np.asarray(book.labeled)] = True
        yield FirstStage(r, book, train.best_variables(state, book), xs, valid, labeled)
    finally:
        r.close()
