"""The `Dataset` record, the source registry and the shared assembly step every source ends with."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from boostmis_jax.data import validate as V
from boostmis_jax.data.split import stratified_carve
from boostmis_jax.errors import UserError

SPLITS = ("train", "val", "test")
CARVE_SEED = 0  # fixed: val/test carved from train must not move with the experiment seed


@dataclasses.dataclass
class Dataset:
    """Everything the training loop needs, validated: arrays in final dtypes, train-only statistics."""

    name: str
    kind: str                # "image" or "features"
    train_x: np.ndarray      # image: (N,H,W,C) uint8; features: (N,D) float32 standardized with train stats
    train_y: np.ndarray      # (N,) int32 in [0, num_classes)
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    class_names: list[str]
    train_ids: list[str]     # relative file path (image folders) or str(row index in the source's train rows)
    mean: np.ndarray         # image: per-channel mean of train_x/255 (C,); features: zeros(D)
    std: np.ndarray          # image: per-channel std of train_x/255 (C,); features: ones(D)

    def summary(self) -> str:
        """One log line: sizes, shape and class balance of train."""
        counts = np.bincount(self.train_y, minlength=self.num_classes).tolist()
        return (f"{self.name} ({self.kind}): train {len(self.train_y)} / val {len(self.val_y)} / "
                f"test {len(self.test_y)}, x {tuple(self.train_x.shape[1:])}, {self.num_classes} classes, "
                f"train per class {counts}")


SourceFn = Callable[[Any], Dataset]
SOURCES: dict[str, SourceFn] = {}


def register_source(name: str) -> Callable[[SourceFn], SourceFn]:
    """Decorator: make a loader selectable as --config.data.source=<name>."""
    def wrap(fn: SourceFn) -> SourceFn:
        if name in SOURCES and SOURCES[name] is not fn:
            raise ValueError(f"data source {name!r} registered twice")
        SOURCES[name] = fn
        return fn
    return wrap


def load_dataset(cfg: Any) -> Dataset:
    """Load the `data` config section's source; every failure is a one-line UserError."""
    source = str(V.cfg_get(cfg, "source", "") or "")
    if source not in SOURCES:
        raise UserError(f"data.source: unknown source {source!r}; pass --config.data.source=<one of "
                        f"{', '.join(sorted(SOURCES))}>")
    return SOURCES[source](cfg)


@dataclasses.dataclass
class RawSplit:
    """One split as read from disk, before carving/standardizing; `where` names its file for messages."""

    x: np.ndarray
    y: np.ndarray
    where: str                      # names the labels' file/key (label errors)
    ids: list[str] | None = None
    x_where: str | None = None      # names the inputs' file/key (shape errors); defaults to `where`


def assemble(name: str, kind: str, splits: dict[str, RawSplit | None], cfg: Any,
             class_names: list[str] | None = None) -> Dataset:
    """Shared tail of every source: range-check labels, carve missing val/test from train, add statistics.

    Sources have already shape/dtype-checked x and y per file (so messages name the right file and row);
    `splits["train"]` is required, val/test may be None (carved with seed 0, stratified).
    """
    num_classes = V.check_num_classes(cfg)
    train = splits["train"]
    assert train is not None
    present = {s: r for s, r in splits.items() if r is not None}
    for split in present.values():
        V.check_labels(split.y, len(split.x), split.where, num_classes)
        if split is not train:
            V.check_same_shape(split.x, train.x, split.x_where or split.where, train.x_where or train.where)
    if not num_classes:
        num_classes = max(int(r.y.max()) + 1 for r in present.values() if len(r.y))
        num_classes = max(num_classes, len(class_names or []))
    if class_names is not None and len(class_names) > num_classes:
        raise UserError(f"{train.where}: {len(class_names)} classes found but num_classes={num_classes}; "
                        f"pass --config.data.num_classes={len(class_names)}")

    train_ids = train.ids if train.ids is not None else [str(i) for i in range(len(train.y))]
    missing = [s for s in ("test", "val") if splits.get(s) is None]
    if missing:
        fractions = {"test": V.check_fraction(cfg, "test_fraction", 0.2),
                     "val": V.check_fraction(cfg, "val_fraction", 0.1)}
        if sum(fractions[s] for s in missing) >= 1.0:
            raise UserError("data.val_fraction + data.test_fraction: leave no training rows; "
                            "lower them so their sum is below 1")
        rest, *parts = stratified_carve(train.y, [fractions[s] for s in missing], seed=CARVE_SEED)
        for s, idx in zip(missing, parts, strict=True):
            ids = [train_ids[i] for i in idx]
            present[s] = RawSplit(train.x[idx], train.y[idx], f"{train.where} (carved {s})", ids)
        train_ids = [train_ids[i] for i in rest]
        train = RawSplit(train.x[rest], train.y[rest], train.where, train_ids)
    val, test = present["val"], present["test"]
    V.check_train_classes(train.y, train.where)

    if kind == "features":
        train_x, val_x, test_x = V.standardize(train.x, val.x, test.x)
        dim = train_x.shape[1]
        mean, std = np.zeros(dim, np.float32), np.ones(dim, np.float32)
    else:
        train_x, val_x, test_x = train.x, val.x, test.x
        mean, std = V.channel_stats(train_x)
    names = list(class_names) if class_names is not None else []
    names += [str(i) for i in range(len(names), num_classes)]
    return Dataset(
        name=name, kind=kind,
        train_x=train_x, train_y=train.y.astype(np.int32),
        val_x=val_x, val_y=val.y.astype(np.int32),
        test_x=test_x, test_y=test.y.astype(np.int32),
        num_classes=num_classes, class_names=names, train_ids=list(train_ids), mean=mean, std=std)
