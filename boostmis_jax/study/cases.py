"""The generated data cases a study writes once into DIR/data: scikit-learn's breast-cancer features in the
MESCC layout, the digits long tail, and a MedMNIST npz's train split with its rarest class cut to a share
(one seeded cut per run seed). Every written array is a pure function of the study keys (and the seed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from boostmis_jax.errors import UserError


def prepare_data(cfg: ml_collections.ConfigDict, workdir: Path, seeds: list[int]) -> dict[int, str]:
    """study.data with an empty data.path: write the example data set into DIR/data once and point
    data.path at it. study.train_minority: one cut per seed; returns seed -> data.path ({} when every
    seed reads cfg.data.path)."""
    name = str(cfg.study.data)
    if name and not str(cfg.data.path):
        if name not in PREPARERS:
            raise UserError(f"study.data={name!r} is unknown; choose one of {sorted(PREPARERS)} or ''")
        cfg.data.path = str(PREPARERS[name](cfg.study, workdir / "data"))
    share = float(cfg.study.get("train_minority", 0.0))
    if not share:
        return {}
    if str(cfg.data.source) != "medmnist_npz":
        raise UserError(f"study.train_minority={share:g} cuts a MedMNIST-layout npz, but data.source is "
                        f"{cfg.data.source!r}; set --config.study.train_minority=0")
    source = Path(str(cfg.data.path))
    paths = {int(s): str(write_minority_cut(source, share, workdir / "data", seed=int(s))) for s in seeds}
    cfg.data.path = paths[int(seeds[0])]        # what the study loads to size the plan
    return paths


def _save_arrays(path: Path, arrays: dict[str, np.ndarray] | np.ndarray) -> None:
    """One .npy (an array) or .npz (a dict of arrays), written atomically."""
    from boostmis_jax.fsutil import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            if isinstance(arrays, dict):
                np.savez(f, **arrays)
            else:
                np.save(f, arrays, allow_pickle=False)

    atomic_write(path, write, suffix=path.suffix)


def write_breast_cancer_mescc(s: Any, datadir: Path) -> Path:
    """scikit-learn's breast-cancer features in the MESCC release layout ({split}-features.npy,
    {split}-targets.npy), val/test carved stratified with seed 0 as the sklearn source does."""
    from sklearn.datasets import load_breast_cancer

    from boostmis_jax.data.split import stratified_carve

    root = datadir / "breast_cancer_mescc"
    files = [root / f"{sp}-{k}.npy" for sp in ("train", "val", "test") for k in ("features", "targets")]
    if all(f.exists() for f in files):
        return root
    bunch = load_breast_cancer()
    x, y = np.asarray(bunch.data, np.float32), np.asarray(bunch.target, np.int64)
    train, test, val = stratified_carve(y, [0.2, 0.1], seed=0)
    for split, idx in (("train", train), ("val", val), ("test", test)):
        _save_arrays(root / f"{split}-features.npy", x[idx])
        _save_arrays(root / f"{split}-targets.npy", y[idx])
    return root


def longtail_counts(per_class: int, classes: int, ratio: float) -> list[int]:
    """Exponential long tail: class c keeps per_class * ratio^(-c/(C-1)) rows (>= 1)."""
    if classes < 2 or ratio < 1:
        raise UserError(f"study.longtail_classes={classes}, study.longtail_ratio={ratio}: need >= 2 classes "
                        f"and a ratio >= 1")
    return [max(1, round(per_class * ratio ** (-c / (classes - 1)))) for c in range(classes)]


def write_digits_longtail(s: Any, datadir: Path) -> Path:
    """scikit-learn digits 0..C-1 as a MedMNIST-layout npz: val/test balanced (carved stratified, seed 0),
    train cut to an exponential long tail (study.longtail_ratio), standing in for MESCC's graded classes."""
    from sklearn.datasets import load_digits

    from boostmis_jax.data.split import stratified_carve

    classes, ratio = int(s.longtail_classes), float(s.longtail_ratio)
    if not 2 <= classes <= 10:
        raise UserError(f"study.longtail_classes={classes}: digits has 10 classes; pick 2..10")
    path = datadir / f"digits_longtail_c{classes}_r{ratio:g}.npz"
    if path.exists():
        return path
    bunch = load_digits()
    keep = bunch.target < classes
    x = np.round(bunch.images[keep] * (255.0 / 16.0)).astype(np.uint8)
    y = bunch.target[keep].astype(np.int64)
    pool, test, val = stratified_carve(y, [0.2, 0.1], seed=0)
    per_class = min(int((y[pool] == c).sum()) for c in range(classes))
    rng = np.random.default_rng(0)
    train = np.sort(np.concatenate([rng.permutation(pool[y[pool] == c])[:n] for c, n in
                                    enumerate(longtail_counts(per_class, classes, ratio))]))
    arrays = {f"{sp}_{k}": (x[idx] if k == "images" else y[idx][:, None])
              for sp, idx in (("train", train), ("val", val), ("test", test)) for k in ("images", "labels")}
    _save_arrays(path, arrays)
    return path


def write_minority_cut(source: Path, share: float, datadir: Path, seed: int = 0) -> Path:
    """A copy of a MedMNIST-layout npz whose train split keeps every row of the other classes and a random
    (`seed`) subset of its rarest class, so that class is `share` of train: an imbalanced case (MESCC's
    high-grade share is near 10%) from a balanced-enough real set. Val and test are copied unchanged."""
    if not 0 < share < 0.5:
        raise UserError(f"study.train_minority={share:g}: expected a share in (0, 0.5), e.g. 0.1")
    path = datadir / f"{source.stem}_minority{share:g}_cut{seed}.npz"
    if path.exists():
        return path
    try:
        with np.load(source) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise UserError(f"study.train_minority: cannot read {source} ({e}); point data.path at a "
                        f"MedMNIST-layout .npz") from None
    if "train_labels" not in arrays or "train_images" not in arrays:
        raise UserError(f"study.train_minority: {source} has no train_images/train_labels; point data.path "
                        f"at a MedMNIST-layout .npz")
    y = np.asarray(arrays["train_labels"]).reshape(len(arrays["train_labels"]), -1)[:, 0]
    classes, counts = np.unique(y, return_counts=True)
    rare = classes[np.argmin(counts)]
    rest = int((y != rare).sum())
    keep_rare = max(1, round(share / (1 - share) * rest))
    if keep_rare >= counts.min():
        raise UserError(f"study.train_minority={share:g}: class {rare} is already "
                        f"{counts.min() / len(y):.3f} "
                        f"of train; pass a smaller share")
    rng = np.random.default_rng(seed)
    kept = np.sort(np.concatenate([np.flatnonzero(y != rare),
                                   rng.permutation(np.flatnonzero(y == rare))[:keep_rare]]))
    arrays["train_images"] = arrays["train_images"][kept]
    arrays["train_labels"] = arrays["train_labels"][kept]
    _save_arrays(path, arrays)
    return path


PREPARERS = {"breast_cancer_mescc": write_breast_cancer_mescc, "digits_longtail": write_digits_longtail}
