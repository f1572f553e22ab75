"""The `Dataset` record, the source registry and the shared assembly step every source ends with."""
from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from pathlib import Path
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
    train_groups: list[str] | None = None     # patient of each train row with data.group_by="patient"
    val_ids: list[str] = dataclasses.field(default_factory=list)   # like train_ids (carved rows keep theirs)
    test_ids: list[str] = dataclasses.field(default_factory=list)
    feature_mean: np.ndarray | None = None    # features: float64 train mean/std the raw inputs were z-scored
    feature_std: np.ndarray | None = None     # with (prediction applies the same), None for images
    official_test_x: np.ndarray | None = None  # data.test_from_train > 0: the source's own test split, kept
    official_test_y: np.ndarray | None = None  # beside the in-distribution test carved from train

    def summary(self) -> str:
        """One log line: sizes, shape and class balance of train."""
        counts = np.bincount(self.train_y, minlength=self.num_classes).tolist()
        groups = f", {len(set(self.train_groups))} train patients" if self.train_groups is not None else ""
        return (f"{self.name} ({self.kind}): train {len(self.train_y)} / val {len(self.val_y)} / "
                f"test {len(self.test_y)}, x {tuple(self.train_x.shape[1:])}, {self.num_classes} classes, "
                f"train per class {counts}{groups}")


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
    source = str(V.cfg_get(cfg, "source") or "")
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
    groups: list[str] | None = None  # patient per row when the files say so (DICOM PatientID)


PATIENTS_NAME = "patients.csv"


def read_patients(path: Path) -> dict[str, str]:
    """`patients.csv`: a header with `id` and `patient` columns, one row per image id -> patient id."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read patients file ({V.one_line(e)}); write a CSV with columns "
                        "id,patient") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "id" not in header or "patient" not in header:
        raise UserError(f"{path}: header {rows[0] if rows else '(empty file)'} lacks the columns id,patient; "
                        "start the file with the line id,patient")
    ci, cp = header.index("id"), header.index("patient")
    out: dict[str, str] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(ci, cp) or not row[ci].strip() or not row[cp].strip():
            raise UserError(f"{path}: line {lineno} needs an id and a patient; write id,patient on every line")
        key, patient = row[ci].strip(), row[cp].strip()
        if out.get(key, patient) != patient:
            raise UserError(f"{path}: line {lineno}: id {key!r} is listed for patients {out[key]!r} and "
                            f"{patient!r}; keep one patient per id")
        out[key] = patient
    return out


def _attach_groups(present: dict[str, RawSplit], name: str, patients_csv: Path | None) -> list[str]:
    """Fill `groups` of every split from patients.csv (which wins) or the source's own (DICOM PatientID);
    train must be complete, and no patient may sit in train and in a shipped val/test split."""
    train = present["train"]
    train_ids = train.ids if train.ids is not None else [str(i) for i in range(len(train.y))]
    if patients_csv is not None and patients_csv.is_file():
        mapping = read_patients(patients_csv)
        missing = [i for i in train_ids if i not in mapping]
        if missing:
            raise UserError(f"{patients_csv}: no patient for training id {missing[0]!r} ({len(missing)} of "
                            f"{len(train_ids)} missing); list every training image as id,patient")
        train.groups = [mapping[i] for i in train_ids]
        for split in present.values():
            if split is not train and split.ids is not None:
                split.groups = [mapping.get(i, "") for i in split.ids]
    elif train.groups is None:
        where = patients_csv if patients_csv is not None else PATIENTS_NAME
        raise UserError(f"data.group_by=patient: {name} does not say which patient each image is from; write "
                        f"{where} with columns id,patient (ids as in the run's queries), or pass "
                        "--config.data.group_by=''")
    first: dict[str, str] = {}
    for gid, rid in zip(train.groups, train_ids, strict=True):
        first.setdefault(gid, rid)
    for s, split in present.items():
        if split is train or split.groups is None:
            continue
        ids = split.ids if split.ids is not None else [str(i) for i in range(len(split.y))]
        for gid, rid in zip(split.groups, ids, strict=True):
            if gid and gid in first:
                raise UserError(f"patient {gid!r} has images in train ({first[gid]}) and in {s} ({rid}); "
                                f"move all of that patient's images into one split")
    return train.groups


def assemble(name: str, kind: str, splits: dict[str, RawSplit | None], cfg: Any,
             class_names: list[str] | None = None, patients_csv: Path | None = None) -> Dataset:
    """Shared tail of every source: range-check labels, carve missing val/test from train, add statistics.

    Sources have already shape/dtype-checked x and y per file (so messages name the right file and row);
    `splits["train"]` is required, val/test may be None (carved with seed 0, stratified). `patients_csv` is
    where this source's patients.csv would be (read with data.group_by="patient").
    """
    V.check_data_options(cfg)
    num_classes = V.check_num_classes(cfg)
    explicit_k = bool(num_classes)
    train = splits["train"]
    assert train is not None
    present = {s: r for s, r in splits.items() if r is not None}
    for split in present.values():
        V.check_labels(split.y, len(split.x), split.where, num_classes)
        if split is not train:
            V.check_same_shape(split.x, train.x, split.x_where or split.where, train.x_where or train.where)
    if not num_classes:
        for r in present.values():
            V.check_inferred_classes(r.y, r.where)
        num_classes = max(int(r.y.max()) + 1 for r in present.values() if len(r.y))
        num_classes = max(num_classes, len(class_names or []))
    if class_names is not None and len(class_names) > num_classes:
        raise UserError(f"{train.where}: {len(class_names)} classes found but num_classes={num_classes}; "
                        f"pass --config.data.num_classes={len(class_names)}")
    grouped = str(V.cfg_get(cfg, "group_by") or "") == "patient"
    groups = _attach_groups(present, name, patients_csv) if grouped else None

    train_ids = train.ids if train.ids is not None else [str(i) for i in range(len(train.y))]
    missing = [s for s in ("test", "val") if splits.get(s) is None]
    if missing:
        fractions = {"test": V.check_fraction(cfg, "test_fraction"),
                     "val": V.check_fraction(cfg, "val_fraction")}
        if sum(fractions[s] for s in missing) >= 1.0:
            raise UserError("data.val_fraction + data.test_fraction: leave no training rows; "
                            "lower them so their sum is below 1")
        rest, *parts = stratified_carve(train.y, [fractions[s] for s in missing], seed=CARVE_SEED,
                                        groups=groups)
        for s, idx in zip(missing, parts, strict=True):
            ids = [train_ids[i] for i in idx]
            present[s] = RawSplit(train.x[idx], train.y[idx], f"{train.where} (carved {s})", ids)
        train_ids = [train_ids[i] for i in rest]
        groups = [groups[i] for i in rest] if groups is not None else None
        train = RawSplit(train.x[rest], train.y[rest], train.where, train_ids)
    official = None
    share = V.check_fraction(cfg, "test_from_train")
    if share:   # an in-distribution test: stratified (seed CARVE_SEED, whole patients with groups) from train
        rest, part = stratified_carve(train.y, [share], seed=CARVE_SEED, groups=groups)
        official = present["test"]
        present["test"] = RawSplit(train.x[part], train.y[part], f"{train.where} (test carved from train)",
                                   [train_ids[i] for i in part])
        train_ids = [train_ids[i] for i in rest]
        groups = [groups[i] for i in rest] if groups is not None else None
        train = RawSplit(train.x[rest], train.y[rest], train.where, train_ids)
    val, test = present["val"], present["test"]
    V.check_train_classes(train.y, train.where)
    names = list(class_names) if class_names is not None else []
    names += [str(i) for i in range(len(names), num_classes)]
    if not explicit_k:
        for split in (val, test):
            V.check_classes_in_train(split.y, train.y, split.where, train.where)
    V.check_class_coverage(train.y, num_classes, names, train.where, explicit=explicit_k)

    V.check_not_constant(train.x, train.x_where or train.where)
    feature_mean = feature_std = None
    if kind == "features":
        feature_mean, feature_std = V.feature_stats(train.x)
        train_x, val_x, test_x = (V.apply_standardize(a, feature_mean, feature_std)
                                  for a in (train.x, val.x, test.x))
        official_x = (V.apply_standardize(official.x, feature_mean, feature_std) if official is not None
                      else None)
        dim = train_x.shape[1]
        mean, std = np.zeros(dim, np.float32), np.ones(dim, np.float32)
    else:
        train_x, val_x, test_x = train.x, val.x, test.x
        official_x = official.x if official is not None else None
        mean, std = V.channel_stats(train_x)

    def ids_of(split: RawSplit) -> list[str]:
        return list(split.ids) if split.ids is not None else [str(i) for i in range(len(split.y))]

    return Dataset(
        name=name, kind=kind,
        train_x=train_x, train_y=train.y.astype(np.int32),
        val_x=val_x, val_y=val.y.astype(np.int32),
        test_x=test_x, test_y=test.y.astype(np.int32),
        num_classes=num_classes, class_names=names, train_ids=list(train_ids), mean=mean, std=std,
        train_groups=groups, val_ids=ids_of(val), test_ids=ids_of(test),
        feature_mean=feature_mean, feature_std=feature_std, official_test_x=official_x,
        official_test_y=official.y.astype(np.int32) if official is not None else None)
