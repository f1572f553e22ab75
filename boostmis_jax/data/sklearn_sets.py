"""Small sets bundled with scikit-learn (no download): smoke tests and CPU-sized experiments.

Neither ships a val/test split: both are carved stratified with seed 0 (data.test_fraction, then
data.val_fraction of all rows), so the evaluation rows do not move with the experiment seed.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from boostmis_jax.data import validate as V
from boostmis_jax.data.base import Dataset, RawSplit, assemble, register_source


@register_source("sklearn_digits")
def load_sklearn_digits(cfg: Any) -> Dataset:
    """1797 8x8 digits, 10 classes; pixel values 0..16 are rescaled to uint8 0..255, shape (N,8,8,1)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    where = "sklearn digits"
    y = V.check_labels(bunch.target, len(x), where)
    names = [str(n) for n in bunch.target_names]
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
