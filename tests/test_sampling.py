"""Labeled batches: uniform or class-balanced (train.labeled_sampling), a pure function of the step."""
from types import SimpleNamespace

import numpy as np
import pytest

from boostmis_jax.bookkeeping import Book
from boostmis_jax.defaults import get_config, validate
from boostmis_jax.errors import UserError
from boostmis_jax.sampling import balanced_rows_for_step, rows_for_step
from boostmis_jax.state import Cycles


def _imbalanced(n_major: int = 96, n_minor: int = 4):
    labels = np.array([1] * n_major + [0] * n_minor, np.int32)
    pool = np.random.default_rng(0).permutation(len(labels)).astype(np.int64)
    return pool, labels


def test_balanced_batches_draw_each_class_equally_and_cover_its_rows():
    pool, labels = _imbalanced()
    steps = [balanced_rows_for_step(pool, labels, 8, s, seed=3, cycle=0, stream=0) for s in range(12)]
    for rows in steps:
        assert set(rows) <= set(pool)
        assert (labels[rows] == 0).sum() == 4          # 4 of 8: the 4% class fills half of every batch
    minority = np.concatenate(steps)[labels[np.concatenate(steps)] == 0]
    # its own epochs: every minority row once per 4 draws, in a seeded order
    assert all(sorted(minority[i:i + 4]) == sorted(np.flatnonzero(labels == 0)) for i in range(0, 48, 4))
    again = balanced_rows_for_step(pool, labels, 8, 5, seed=3, cycle=0, stream=0)
    np.testing.assert_array_equal(again, steps[5])      # a pure function of (seed, cycle, stream, step)
    other = balanced_rows_for_step(pool, labels, 8, 5, seed=4, cycle=0, stream=0)
    assert not np.array_equal(other, steps[5])


def test_uniform_batches_follow_the_pool_share():
    pool, labels = _imbalanced()
    rows = np.concatenate([rows_for_step(pool, 10, s, seed=3, cycle=0, stream=0) for s in range(10)])
    assert (labels[rows] == 0).sum() == 4               # one epoch of 100 draws: the 4 minority rows once


def test_balanced_batches_skip_classes_without_labels():
    labels = np.array([0] * 10 + [2] * 3 + [1] * 7, np.int32)
    pool = np.flatnonzero(labels != 1)                  # class 1 has no labeled row yet
    rows = balanced_rows_for_step(pool, labels, 6, 0, seed=0, cycle=1, stream=0)
    assert sorted(np.bincount(labels[rows], minlength=3)) == [0, 3, 3]


def _batches(sampling: str) -> np.ndarray:
    from boostmis_jax.train import batch_maker

    cfg = get_config()
    cfg.train.labeled_sampling = sampling
    cfg.train.batch_size = 10
    cfg.ssl.uratio = 1
    validate(cfg)
    pool, labels = _imbalanced()
    ds = SimpleNamespace(train_x=np.zeros((len(labels), 2), np.float32), train_y=labels)
    r = SimpleNamespace(ds=ds, cfg=cfg, cycles=Cycles.from_config(cfg.train.steps, cfg.al.steps_per_cycle))
    make_batch, _ = batch_maker(r, Book(labeled=[int(i) for i in pool[:50]]))
    return np.concatenate([make_batch(s)["yl"] for s in range(10)])


def test_the_loop_uses_the_configured_sampling():
    assert (_batches("class_balanced") == 0).mean() == 0.5
    assert (_batches("uniform") == 0).mean() < 0.2


def test_unknown_sampling_is_refused():
    cfg = get_config()
    cfg.train.labeled_sampling = "balanced"
    with pytest.raises(UserError, match="train.labeled_sampling"):
        validate(cfg)


def test_balanced_batches_with_odd_sizes_and_one_row_classes():
    labels = np.array([0] * 9 + [1], np.int32)                 # class 1: one labeled row
    pool = np.arange(10)
    rows = np.concatenate([balanced_rows_for_step(pool, labels, 7, s, seed=1, cycle=0, stream=0)
                           for s in range(4)])              # 28 slots, alternating classes over steps
    assert (rows == 9).sum() == 14 and len(set(rows[labels[rows] == 0])) == 9
    with pytest.raises(ValueError, match="non-empty pool"):
        balanced_rows_for_step(pool[:0], labels, 4, 0, seed=0, cycle=0, stream=0)


def test_twin_runs_differ_only_in_the_labeled_rows():
    """Unlabeled rows and their order are the same under both settings: a twin study changes one thing."""
    from boostmis_jax.train import batch_maker

    out = {}
    for sampling in ("uniform", "class_balanced"):
        cfg = get_config()
        cfg.train.labeled_sampling = sampling
        pool, labels = _imbalanced()
        ds = SimpleNamespace(train_x=np.arange(len(labels), dtype=np.float32)[:, None], train_y=labels)
        r = SimpleNamespace(ds=ds, cfg=cfg, cycles=Cycles.from_config(cfg.train.steps, cfg.al.steps_per_cycle))
        out[sampling] = batch_maker(r, Book(labeled=[int(i) for i in pool[:50]]))[0](3)
    np.testing.assert_array_equal(out["uniform"]["iu"], out["class_balanced"]["iu"])
    assert not np.array_equal(out["uniform"]["yl"], out["class_balanced"]["yl"])
