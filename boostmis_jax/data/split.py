"""Labeled/unlabeled splits and stratified carving of val/test from train.

The labeled subset is the experiment's most important hidden variable, so it is stratified, seeded, saved to
`workdir/split.json` on first use and reloaded on resume (a resumed run must not silently relabel).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from boostmis_jax.data.validate import cfg_get, one_line
from boostmis_jax.errors import UserError

if TYPE_CHECKING:
    from boostmis_jax.data.base import Dataset

SPLIT_NAME = "split.json"


def _allocate(counts: np.ndarray, total: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Split `total` across classes proportionally to `counts` (largest remainder) within [lo, hi].

    The caller guarantees sum(lo) <= total <= sum(hi). Ties go to the lower class index, so the result is a
    pure function of the inputs.
    """
    counts = np.asarray(counts, np.float64)
    quota = total * counts / max(counts.sum(), 1.0)
    alloc = np.clip(np.floor(quota).astype(np.int64), lo, hi)
    while alloc.sum() < total:
        room = np.where(alloc < hi, quota - alloc, -np.inf)
        alloc[int(np.argmax(room))] += 1
    while alloc.sum() > total:
        excess = np.where(alloc > lo, alloc - quota, -np.inf)
        alloc[int(np.argmax(excess))] -= 1
    return alloc


def labeled_split(y: np.ndarray, num_labels: int, seed: int) -> np.ndarray:
    """Stratified, seeded labeled subset: >= 1 per class present in `y`, proportional otherwise.

    Returns sorted int64 indices into `y` (the training rows).
    """
    y = np.asarray(y)
    num_labels = int(num_labels)
    classes, counts = np.unique(y, return_counts=True)
    if num_labels > len(y):
        raise UserError(
            f"data.num_labels: {num_labels} exceeds the {len(y)} training rows; "
            f"pass --config.data.num_labels=<{len(y)} or fewer>")
    if num_labels < len(classes):
        raise UserError(
            f"data.num_labels: {num_labels} is fewer than the {len(classes)} classes (need >= 1 per class); "
            f"pass --config.data.num_labels={len(classes)} or more")
    alloc = _allocate(counts, num_labels, np.ones_like(counts), counts)
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, alloc, strict=True)]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def stratified_carve(y: np.ndarray, fractions: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """Carve stratified parts of round(f * N) rows each from `y`; returns [rest, part_0, part_1, ...].

    Used when a source ships no val/test split. Fractions are of the whole pool. Each class keeps >= 1 row
    in `rest` (train). The default seed 0 is fixed on purpose: the evaluation split must not move when the
    experiment seed changes, or runs with different seeds would be scored on different data.
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    left = counts.copy()
    taken = np.zeros_like(counts)
    parts: list[np.ndarray] = []
    for frac in fractions:
        hi = np.maximum(left - 1, 0)
        total = min(round(float(frac) * len(y)), int(hi.sum()))
        alloc = _allocate(left, total, np.zeros_like(counts), hi)
        part = [p[t:t + k] for p, t, k in zip(perms, taken, alloc, strict=True)]
        parts.append(np.sort(np.concatenate([*part, np.zeros(0, np.int64)])).astype(np.int64))
        taken += alloc
        left -= alloc
    kept = [p[t:] for p, t in zip(perms, taken, strict=True)]
    rest = np.sort(np.concatenate([*kept, np.zeros(0, np.int64)])).astype(np.int64)
    return [rest, *parts]


def labels_checksum(train_y: np.ndarray) -> str:
    """sha256 of the training labels: detects a saved split being reused with a different training set."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(train_y), dtype="<i8").tobytes()).hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    """tmp file in the same folder + os.replace: a crash never leaves a half-written split behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_split(path: str | os.PathLike, indices: np.ndarray, train_y: np.ndarray) -> None:
    """Write {"labeled": [...], "num_train": N, "checksum": sha256(train labels)} atomically."""
    record = {
        "labeled": [int(i) for i in np.sort(np.asarray(indices))],
        "num_train": len(train_y),
        "checksum": labels_checksum(train_y),
    }
    _atomic_write_text(Path(path), json.dumps(record) + "\n")


def _read_json_split(path: Path, num_train: int) -> list:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable JSON split file ({one_line(e)}); "
                        'write {"labeled": [row indices]}') from None
    if isinstance(record, list):
        return record
    if not isinstance(record, dict) or not isinstance(record.get("labeled"), list):
        raise UserError(f'{path}: expected a JSON object with a "labeled" list of row indices; '
                        'write {"labeled": [row indices]}')
    saved_n = record.get("num_train")
    if saved_n is not None and saved_n != num_train:
        raise UserError(f"{path}: written for {saved_n} training rows but the dataset has {num_train}; "
                        "use the split file that belongs to this dataset")
    return record["labeled"]


def _read_txt_split(path: Path) -> list:
    try:
        lines = path.read_text().splitlines()
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read split file ({one_line(e)}); "
                        "write one row index per line") from None
    values = []
    for lineno, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            values.append(int(text))
        except ValueError:
            raise UserError(f"{path}: line {lineno} is {text!r}, not an integer row index; "
                            "write one row index per line") from None
    return values


def load_split_file(path: str | os.PathLike, num_train: int) -> np.ndarray:
    """Read labeled row indices from .json (save_split's format or a plain list), .npy or .txt.

    Returns sorted int64 indices; rejects empty, duplicate, non-integer or out-of-range entries.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: split file not found; "
                        "pass --config.data.split_file=<.json/.npy/.txt> or ''")
    suffix = path.suffix.lower()
    if suffix == ".json":
        raw = _read_json_split(path, num_train)
    elif suffix == ".txt":
        raw = _read_txt_split(path)
    elif suffix == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise UserError(f"{path}: not a readable .npy split file ({one_line(e)}); "
                            "save a 1-D int array with numpy.save") from None
    else:
        raise UserError(f"{path}: unknown split file type '{suffix}'; use .json, .npy or .txt")
    arr = np.asarray(raw)
    if arr.size == 0:
        raise UserError(f"{path}: split file lists no labeled rows; list at least one row index")
    if arr.ndim != 1:
        raise UserError(f"{path}: split indices have shape {tuple(arr.shape)}; "
                        "expected a flat list of row indices")
    numeric = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    if arr.dtype == object or not numeric:
        raise UserError(f"{path}: split indices must be integers (got {arr.dtype}); list integer row indices")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(np.nan_to_num(arr)))
        if bad.any():
            pos = int(np.argmax(bad))
            raise UserError(f"{path}: entry {pos} is {arr[pos]}, not an integer row index; "
                            "list integer row indices")
    idx = arr.astype(np.int64)
    out = (idx < 0) | (idx >= num_train)
    if out.any():
        pos = int(np.argmax(out))
        raise UserError(f"{path}: index {idx[pos]} (entry {pos}) is outside [0, {num_train}); "
                        "indices are rows of the training split")
    uniq, counts = np.unique(idx, return_counts=True)
    if len(uniq) != len(idx):
        dup = uniq[np.argmax(counts > 1)]
        raise UserError(f"{path}: index {dup} is listed more than once; remove duplicates")
    return uniq


def ensure_split(workdir: str | os.PathLike, cfg_data: Any, dataset: Dataset, seed: int) -> np.ndarray:
    """The labeled indices for this run: resume workdir/split.json, else data.split_file, else labeled_split.

    Always (re)writes workdir/split.json so the run is reproducible from its workdir alone.
    """
    saved_path = Path(workdir).expanduser() / SPLIT_NAME
    split_file = str(cfg_get(cfg_data, "split_file", "") or "")
    num_train = len(dataset.train_y)
    explicit = load_split_file(split_file, num_train) if split_file else None
    if saved_path.exists():
        indices = load_split_file(saved_path, num_train)
        record = json.loads(saved_path.read_text()) if saved_path.suffix == ".json" else {}
        checksum = record.get("checksum") if isinstance(record, dict) else None
        if checksum is not None and checksum != labels_checksum(dataset.train_y):
            raise UserError(f"{saved_path}: saved for a different training set (labels checksum differs); "
                            "use a fresh --workdir or delete the stale split.json")
        if explicit is not None and not np.array_equal(indices, explicit):
            raise UserError(f"{saved_path}: the resumed split differs from data.split_file {split_file}; "
                            "use a fresh --workdir or pass --config.data.split_file=''")
        want = int(cfg_get(cfg_data, "num_labels", 0))
        if explicit is None and want and len(indices) != want:
            raise UserError(f"{saved_path}: holds {len(indices)} labeled rows but data.num_labels={want}; "
                            f"use a fresh --workdir, or delete that split.json to draw a new split")
    elif explicit is not None:
        indices = explicit
    else:
        indices = labeled_split(dataset.train_y, int(cfg_get(cfg_data, "num_labels", 0)), seed)
    save_split(saved_path, indices, dataset.train_y)
    return indices
