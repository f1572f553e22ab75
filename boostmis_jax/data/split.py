"""Labeled/unlabeled splits and stratified carving of val/test from train.

The labeled subset is the experiment's most important hidden variable, so it is stratified (or class
balanced), seeded, saved to `workdir/split.json` on first use and reloaded on resume (a resumed run must not
silently relabel). With patient groups (`data.group_by="patient"`) every carve and draw moves whole patients,
so no patient's images sit on both sides of a split.

This module takes arrays, never a `Dataset`, so `base.py` can import it without a cycle.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from boostmis_jax.data.validate import cfg_get, check_data_options, one_line, warn_split_classes
from boostmis_jax.errors import UserError, boundary
from boostmis_jax.fsutil import atomic_write_text, kind_of

SPLIT_NAME = "split.json"
BALANCES = ("stratified", "balanced", "random")


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


def _class_quota(y: np.ndarray, num_labels: int, balance: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes, row counts, labeled rows per class): >= 1 per class, proportional or equal."""
    classes, counts = np.unique(y, return_counts=True)
    if num_labels > len(y):
        raise UserError(
            f"data.num_labels: {num_labels} exceeds the {len(y)} training rows; "
            f"pass --config.data.num_labels=<{len(y)} or fewer>")
    if num_labels < len(classes):
        raise UserError(
            f"data.num_labels: {num_labels} is fewer than the {len(classes)} classes (need >= 1 per class); "
            f"pass --config.data.num_labels={len(classes)} or more")
    if balance not in BALANCES:
        raise UserError(f"data.label_balance: {balance!r} is not one of {', '.join(BALANCES)}; "
                        "pass --config.data.label_balance=stratified")
    weights = counts if balance == "stratified" else np.ones_like(counts)
    alloc = _allocate(weights, num_labels, np.ones_like(counts), counts)
    if balance == "balanced":
        share = num_labels // len(classes)
        short = [(int(c), int(n)) for c, n in zip(classes, counts, strict=True) if n < share]
        if short:
            text = ", ".join(f"class {c} has {n}" for c, n in short)
            print(f"warning: data.label_balance=balanced: {text} training rows, fewer than the equal share "
                  f"{share}; those classes are labeled in full and the rest goes to the others", file=sys.stderr)
    return classes, counts, alloc


def labeled_split(y: np.ndarray, num_labels: int, seed: int, *, balance: str = "stratified",
                  groups: Sequence[str] | None = None) -> np.ndarray:
    """Seeded labeled subset of the training rows, >= 1 per class present in `y`.

    balance="stratified": per-class counts proportional to the class sizes; "balanced": equal counts per
    class (the BoostMIS release starts MESCC from 250 per class), a class too small for its share is taken
    whole; "random": a plain random draw that never reads `y` (no per-class minimum). With `groups` (one
    patient id per row) whole patients are drawn, so the labeled set holds about
    `num_labels` rows (never more than the request plus the one patient a class may need).
    Returns sorted int64 indices into `y`.
    """
    y = np.asarray(y)
    if balance == "random":
        return _random_draw(len(y), int(num_labels), seed, groups)
    classes, _, alloc = _class_quota(y, int(num_labels), balance)
    rng = np.random.default_rng(seed)
    if groups is None:
        picked = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, alloc, strict=True)]
        return np.sort(np.concatenate(picked)).astype(np.int64)
    return _grouped_draw(y, np.asarray(groups), classes, alloc, rng)


def _random_draw(n: int, num_labels: int, seed: int, groups: Sequence[str] | None) -> np.ndarray:
    """data.label_balance=random: rows (or whole patients, until num_labels rows) drawn without looking at
    labels, as a user labeling a random sample would; a class may be missing from the draw."""
    if not 1 <= num_labels <= n:
        raise UserError(f"data.num_labels: {num_labels} is outside [1, {n}] training rows; "
                        f"pass --config.data.num_labels=<1..{n}>")
    rng = np.random.default_rng(seed)
    if groups is None:
        return np.sort(rng.permutation(n)[:num_labels]).astype(np.int64)
    names, inv = np.unique(np.asarray(groups), return_inverse=True)
    sizes = np.bincount(inv, minlength=len(names))
    chosen = np.zeros(len(names), bool)
    have = 0
    for g in rng.permutation(len(names)):
        if have >= num_labels:
            break
        chosen[g], have = True, have + int(sizes[g])
    return np.flatnonzero(chosen[inv]).astype(np.int64)


def _group_table(y: np.ndarray, groups: np.ndarray, classes: np.ndarray):
    """(group ids, row -> group index, per-group class counts (G, C), per-group majority class index)."""
    names, inv = np.unique(groups, return_inverse=True)
    cls_idx = np.searchsorted(classes, y)
    table = np.zeros((len(names), len(classes)), np.int64)
    np.add.at(table, (inv, cls_idx), 1)
    return names, inv, table, np.argmax(table, axis=1)


def _grouped_draw(y: np.ndarray, groups: np.ndarray, classes: np.ndarray, alloc: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """Whole patients per class (by their majority class) until each class quota is met without overshoot;
    a class none of whose patients fits gets its smallest patient, so every class stays labeled."""
    _, inv, table, major = _group_table(y, groups, classes)
    have = np.zeros(len(classes), np.int64)
    chosen = np.zeros(len(table), bool)
    for g in rng.permutation(len(table)):
        room = alloc - have
        if np.all(table[g] <= np.maximum(room, 0)) and room[major[g]] > 0:
            chosen[g] = True
            have += table[g]
    for c in range(len(classes)):
        if have[c] == 0:
            cands = np.flatnonzero((table[:, c] > 0) & ~chosen)
            g = int(cands[np.argmin(table[cands].sum(axis=1), kind="stable")])
            chosen[g] = True
            have += table[g]
    return np.flatnonzero(chosen[inv]).astype(np.int64)


def stratified_carve(y: np.ndarray, fractions: Sequence[float], seed: int = 0,
                     groups: Sequence[str] | None = None) -> list[np.ndarray]:
    """Carve stratified parts of round(f * N) rows each from `y`; returns [rest, part_0, part_1, ...].

    Used when a source ships no val/test split. Fractions are of the whole pool. Each class keeps >= 1 row
    in `rest` (train). The default seed 0 is fixed on purpose: the evaluation split must not move when the
    experiment seed changes, or runs with different seeds would be scored on different data. With `groups`
    whole patients move (sizes are then approximate, class balance best effort).
    """
    y = np.asarray(y)
    if groups is not None:
        return _grouped_carve(y, np.asarray(groups), fractions, seed)
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


def _grouped_carve(y: np.ndarray, groups: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Greedy patient-level carve: patients in a seeded order, largest first, each to the part whose per-class
    quota it fills most (rest when none needs it); a class left without a train row gets its smallest
    patient back from the parts, so train keeps every class."""
    classes = np.unique(y)
    _, inv, table, _ = _group_table(y, groups, classes)
    totals = table.sum(axis=0).astype(np.float64)
    quota = np.outer([float(f) for f in fractions], totals)            # (parts, classes) rows wanted
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(table))
    order = order[np.argsort(-table[order].sum(axis=1), kind="stable")]
    have = np.zeros_like(quota)
    where = np.zeros(len(table), np.int64)            # 0 = rest (train), p + 1 = part p
    for g in order:
        gain = np.minimum(table[g][None, :], np.maximum(quota - have, 0.0)).sum(axis=1)
        over = np.maximum(have + table[g][None, :] - quota, 0.0).sum(axis=1)
        score = gain - over
        p = int(np.argmax(score))
        if score[p] > 0:
            where[g] = p + 1
            have[p] += table[g]
    for c in range(len(classes)):
        in_rest = table[where == 0, c].sum()
        if in_rest == 0:
            cands = np.flatnonzero((table[:, c] > 0) & (where > 0))
            g = int(cands[np.argmin(table[cands].sum(axis=1), kind="stable")])
            where[g] = 0
    row_part = where[inv]
    return [np.flatnonzero(row_part == p).astype(np.int64) for p in range(len(fractions) + 1)]


def labels_checksum(train_y: np.ndarray) -> str:
    """sha256 of the training labels: detects a saved split being reused with a different training set."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(train_y), dtype="<i8").tobytes()).hexdigest()


def save_split(path: str | os.PathLike, indices: np.ndarray, train_y: np.ndarray,
               requested: int | None = None) -> None:
    """Write {"labeled": [...], "num_train": N, "checksum": sha256(train labels)} atomically.

    `requested` records data.num_labels when a patient-level draw labels a different number of rows, so a
    resume compares the request, not the count."""
    record = {
        "labeled": [int(i) for i in np.sort(np.asarray(indices))],
        "num_train": len(train_y),
        "checksum": labels_checksum(train_y),
    }
    if requested is not None:
        record["requested"] = int(requested)
    atomic_write_text(Path(path), json.dumps(record) + "\n")


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
    if path.exists() and not path.is_file():
        raise UserError(f"{path}: is {kind_of(path)}, not a split file; pass --config.data.split_file=<file>")
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
    with boundary(path, "list integer row indices", "not a flat list of row indices"):
        arr = np.asarray(raw)  # ragged nesting raises ValueError
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
    if np.issubdtype(arr.dtype, np.floating):  # compared as floats: 1e30 must not wrap around in the cast
        far = (arr < 0) | (arr >= num_train)
        if far.any():
            pos = int(np.argmax(far))
            raise UserError(f"{path}: index {arr[pos]:g} (entry {pos}) is outside [0, {num_train}); "
                            "indices are rows of the training split")
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


def ensure_split(workdir: str | os.PathLike, cfg_data: Any, train_y: np.ndarray, seed: int,
                 groups: Sequence[str] | None = None) -> np.ndarray:
    """The labeled indices for this run: resume workdir/split.json, else data.split_file, else labeled_split.

    `train_y` are the training labels, `groups` the patient of each training row (Dataset.train_groups; None
    without data.group_by). Always (re)writes workdir/split.json so the run is reproducible from its workdir
    alone.
    """
    train_y = np.asarray(train_y)
    check_data_options(cfg_data)
    saved_path = Path(workdir).expanduser() / SPLIT_NAME
    split_file = str(cfg_get(cfg_data, "split_file") or "")
    num_train = len(train_y)
    want = int(cfg_get(cfg_data, "num_labels"))
    if want == 0 and not split_file:  # zero labels: the oracle labels the first round (selfsup.py)
        indices = np.zeros(0, np.int64)
        atomic_write_text(saved_path, json.dumps({"labeled": [], "num_train": num_train,
                                                  "checksum": labels_checksum(train_y)}) + "\n")
        return indices
    explicit = load_split_file(split_file, num_train) if split_file else None
    requested = None
    if saved_path.exists():
        indices = load_split_file(saved_path, num_train)
        record = json.loads(saved_path.read_text()) if saved_path.suffix == ".json" else {}
        record = record if isinstance(record, dict) else {}
        checksum = record.get("checksum")
        if checksum is not None and checksum != labels_checksum(train_y):
            raise UserError(f"{saved_path}: saved for a different training set (labels checksum differs); "
                            "use a fresh --workdir or delete the stale split.json")
        if explicit is not None and not np.array_equal(indices, explicit):
            raise UserError(f"{saved_path}: the resumed split differs from data.split_file {split_file}; "
                            "use a fresh --workdir or pass --config.data.split_file=''")
        requested = record.get("requested")
        held = int(requested) if requested is not None else len(indices)
        if explicit is None and want and held != want:
            raise UserError(f"{saved_path}: holds a split of {held} labeled rows but data.num_labels={want}; "
                            f"use a fresh --workdir, or delete that split.json to draw a new split")
    elif explicit is not None:
        indices = explicit
        warn_split_classes(train_y[indices], split_file)
    else:
        balance = str(cfg_get(cfg_data, "label_balance"))
        indices = labeled_split(train_y, want, seed, balance=balance, groups=groups)
        if groups is not None:
            requested = want
    save_split(saved_path, indices, train_y, requested=requested)
    return indices
