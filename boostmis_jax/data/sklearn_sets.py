"""Small sets bundled with scikit-learn (no download): smoke tests and CPU-sized experiments.

Neither ships a val/test split: both are carved stratified with seed 0 (data.test_fraction, then
data.val_fraction of all rows), so the evaluation rows do not move with the experiment seed.
"""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from boostmis_jax.data import validate as V
from boostmis_jax.data.base import Dataset, RawSplit, assemble, register_source


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) in 0..16, targets): scikit-learn's bundled digits.csv.gz read directly, as
    `sklearn.datasets.load_digits` reads it, because importing scikit-learn costs ~1.3 s of a 15 s cold
    start; through `load_digits` when a scikit-learn release moves the file."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(path, "rt") as fh:
        data = np.loadtxt(fh, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


@register_source("sklearn_digits")
def load_sklearn_digits(cfg: Any) -> Dataset:
    """1797 8x8 digits, 10 classes; pixel values 0..16 are rescaled to uint8 0..255, shape (N,8,8,1)."""
    images, target = _digits()
    x = np.round(images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    where = "sklearn digits"
    y = V.check_labels(target, len(x), where)
    names = [str(n) for n in range(10)]
    splits = {"train": RawSplit(x, y, where), "val": None, "test": None}
    return assemble("digits", "image", splits, cfg, names)


@register_source("sklearn_breast_cancer")
def load_sklearn_breast_cancer(cfg: Any) -> Dataset:
    """569 rows x 30 features, 2 classes (malignant, benign); z-scored with train statistics."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    where = "sklearn breast_cancer"
    x = V.check_features(np.asarray(bunch.data), where)
    y = V.check_labels(bunch.target, len(x), where)
    names = [str(n) for n in bunch.target_names]
    return assemble("breast_cancer", "features", {"train": RawSplit(x, y, where), "val": None, "test": None},
                    cfg, names)
