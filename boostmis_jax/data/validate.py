"""Input checks shared by every data source.

Every check raises `UserError` with ONE line that names the offending file (and key/row where it helps) and
the fix, so a bad data file fails before any compilation instead of deep inside a jitted step.
"""
from __future__ import annotations

import pickle
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from boostmis_jax.defaults import section_defaults
from boostmis_jax.errors import UserError

STD_FLOOR = 1e-6


def one_line(text: object) -> str:
    """Collapse an exception message to a single line (main prints exactly one line)."""
    return " ".join(str(text).split())


def cfg_get(cfg: Any, key: str) -> Any:
    """A `data` key from a ConfigDict or a plain dict (tests and benchmarks pass partial ones); a missing key
    or `None` reads defaults.py's value, so no loader repeats a default."""
    value = cfg.get(key) if hasattr(cfg, "get") else getattr(cfg, key, None)
    return section_defaults("data")[key] if value is None else value


def require_path(cfg: Any, hint: str) -> Path:
    """The `data.path` value, which must be set: sources that read files have no sensible default."""
    path = str(cfg_get(cfg, "path") or "")
    if not path:
        raise UserError(f"data.path: not set; pass --config.data.path=<{hint}>")
    return Path(path).expanduser()


def show_path(path: Path) -> str:
    """A path as the user gave it, plus where it resolved to when it was relative: a relative data.path is
    read from the working directory, and the message must not just repeat the value that failed."""
    if path.is_absolute():
        return str(path)
    return f"{path} (resolved against the working directory to {path.absolute()})"


def require_file(path: Path, hint: str) -> Path:
    """Fail with the path and the flag that fixes it when a file is missing (or is a folder)."""
    if not path.exists():
        raise UserError(f"{show_path(path)}: file not found; pass --config.data.path=<{hint}>")
    if not path.is_file():
        raise UserError(f"{show_path(path)}: is a folder, expected a file; pass --config.data.path=<{hint}>")
    return path


def require_dir(path: Path, hint: str) -> Path:
    """Like `require_file` for sources whose `data.path` is a folder."""
    if not path.exists():
        raise UserError(f"{show_path(path)}: folder not found; pass --config.data.path=<{hint}>")
    if not path.is_dir():
        raise UserError(f"{show_path(path)}: is a file, expected a folder; pass --config.data.path=<{hint}>")
    return path


GROUP_BY = ("", "patient")
LABEL_BALANCES = ("stratified", "balanced", "random")


def check_data_options(cfg: Any) -> None:
    """The data keys that are not about files: balance, grouping, DICOM window and frame."""
    balance = str(cfg_get(cfg, "label_balance"))
    if balance not in LABEL_BALANCES:
        raise UserError(f"data.label_balance: {balance!r} is not one of {', '.join(LABEL_BALANCES)}; "
                        "pass --config.data.label_balance=stratified (class proportions), balanced or random")
    group_by = str(cfg_get(cfg, "group_by") or "")
    if group_by not in GROUP_BY:
        raise UserError(f"data.group_by: {group_by!r} is not '' or 'patient'; "
                        "pass --config.data.group_by=patient (or '' for no grouping)")
    for key in ("window_center", "window_width", "dicom_frame"):
        value = cfg_get(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise UserError(f"data.{key}: {value!r} is not a number; pass --config.data.{key}=<number>")
    width, center = float(cfg_get(cfg, "window_width")), float(cfg_get(cfg, "window_center"))
    if width < 0:
        raise UserError(f"data.window_width: {width} is negative; pass a width > 0 (or 0 = the file's window)")
    if width == 0 and center != 0:
        raise UserError(f"data.window_center={center} needs data.window_width; pass "
                        "--config.data.window_width=<width> too (0 for both = the file's own window)")
    frame = cfg_get(cfg, "dicom_frame")
    if float(frame) != int(frame) or int(frame) < -1:
        raise UserError(f"data.dicom_frame: {frame} is invalid; pass -1 (refuse multi-frame files) or a "
                        "frame index >= 0")


def warn(msg: str) -> None:
    """A one-line warning on stderr: something to know that does not stop the run."""
    print(f"warning: {msg}", file=sys.stderr)


_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, KeyError)


def _describe(e: BaseException) -> str:
    """numpy calls unknown bytes 'pickled data ... allow_pickle': never suggest unpickling a data file."""
    if "pickle" in str(e):
        return "unrecognized content: not a numpy file, or it holds pickled objects"
    return f"{type(e).__name__}: {one_line(e)}"


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read every array eagerly, so a corrupt member fails here (with the file name), not on first use."""
    try:
        archive = np.load(path, allow_pickle=False)
        if isinstance(archive, np.ndarray):
            raise UserError(f"{path}: is a single .npy array, expected an .npz archive of named arrays; "
                            "save them with numpy.savez")
        with archive:
            return {key: np.asarray(archive[key]) for key in archive.files}
    except _READ_ERRORS as e:
        raise UserError(
            f"{path}: not a readable .npz archive ({_describe(e)}); "
            "re-download it or re-export it with numpy.savez") from None


def load_npy(path: Path) -> np.ndarray:
    """Read one .npy file without pickle (object arrays are rejected, since they can run code)."""
    try:
        array = np.load(path, allow_pickle=False)
    except _READ_ERRORS as e:
        raise UserError(
            f"{path}: not a readable .npy file ({_describe(e)}); "
            "re-export it with numpy.save") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise UserError(f"{path}: is an .npz archive, expected a single .npy array; "
                        "re-export it with numpy.save")
    return array


def require_keys(arrays: Mapping[str, np.ndarray], keys: list[str], path: Path) -> None:
    """Name the first missing key and list what the file does contain."""
    for key in keys:
        if key not in arrays:
            found = ", ".join(sorted(arrays)) or "nothing"
            raise UserError(
                f"{path}: missing key '{key}' (found: {found}); save the arrays under the names "
                f"{', '.join(keys)}")


def _nonfinite_error(x: np.ndarray, where: str, fix: str) -> None:
    """Count NaN/inf and point at the first one: a single NaN poisons the whole run's loss."""
    if not np.issubdtype(x.dtype, np.floating):
        return
    bad = ~np.isfinite(x)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise UserError(f"{where}: {count} NaN/inf values (first at index {first}); {fix}")


def check_images(x: np.ndarray, where: str) -> np.ndarray:
    """Return (N,H,W,C) uint8 images, C in {1,3}.

    Non-uint8 images are accepted only if every value is already in [0, 255] (floats are rounded).
    Float images in [0, 1] with fractional values are rejected rather than silently turned black.
    """
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(
            f"{where}: images have shape {tuple(x.shape)}; expected (N,H,W) gray or (N,H,W,C) with C in "
            "{1,3} (channels last; 3-D volumes are not supported)")
    if x.shape[0] == 0:
        raise UserError(f"{where}: no images (0 rows); the split must not be empty")
    if x.dtype == np.uint8:
        return x
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise UserError(f"{where}: images have dtype {x.dtype}; save them as uint8 in 0..255")
    _nonfinite_error(x, where, "replace or drop those images")
    lo, hi = x.min(), x.max()
    if lo < 0 or hi > 255:
        raise UserError(
            f"{where}: images have dtype {x.dtype} with values in [{lo}, {hi}]; rescale them to uint8 0..255")
    if np.issubdtype(x.dtype, np.floating):
        if hi <= 1.0 and np.any(x != np.round(x)):
            raise UserError(
                f"{where}: float images lie in [0, 1]; multiply by 255 and save them as uint8 0..255")
        x = np.round(x)
    return x.astype(np.uint8)


def check_features(x: np.ndarray, where: str) -> np.ndarray:
    """Return (N,D) float32 features with no NaN/inf."""
    if x.ndim != 2:
        raise UserError(f"{where}: features have shape {tuple(x.shape)}; expected 2-D (N, D)")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise UserError(f"{where}: features have shape {tuple(x.shape)}; need at least one row and column")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise UserError(f"{where}: features have dtype {x.dtype}; save them as float32")
    _nonfinite_error(x, where, "impute or drop those rows")
    return x.astype(np.float32)


def check_labels(y: np.ndarray, num_rows: int, where: str, num_classes: int = 0,
                 rows_of: str = "rows") -> np.ndarray:
    """Return (N,) int32 class indices; reject multi-label, non-integer, negative or >= num_classes values."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        raise UserError(
            f"{where}: labels have shape {tuple(y.shape)} (multi-label); only single-label class indices "
            "of shape (N,) or (N,1) are supported")
    elif y.ndim != 1:
        raise UserError(f"{where}: labels have shape {tuple(y.shape)}; expected (N,) or (N,1)")
    if len(y) != num_rows:
        raise UserError(
            f"{where}: {len(y)} labels but {num_rows} {rows_of}; every row needs exactly one label")
    if np.issubdtype(y.dtype, np.bool_):
        y = y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        frac = ~np.isfinite(y) | (y != np.round(np.nan_to_num(y)))
        if frac.any():
            row = int(np.argmax(frac))
            raise UserError(
                f"{where}: label {y[row]} at row {row} is not an integer class index; store labels as ints")
        y = np.round(y).astype(np.int64)
    elif not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{where}: labels have dtype {y.dtype}; store labels as integer class indices")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        row = int(np.argmax(y < 0))
        raise UserError(f"{where}: negative label {y[row]} at row {row}; labels must be class indices >= 0")
    if num_classes > 0 and len(y) and y.max() >= num_classes:
        row = int(np.argmax(y >= num_classes))
        raise UserError(
            f"{where}: label {y[row]} at row {row} is out of range for num_classes={num_classes}; "
            f"fix the labels or pass --config.data.num_classes={int(y.max()) + 1}")
    if len(y) and y.max() > np.iinfo(np.int32).max:
        raise UserError(f"{where}: label {y.max()} does not fit in int32; relabel classes as 0..K-1")
    return y.astype(np.int32)


def check_num_classes(cfg: Any) -> int:
    """`data.num_classes`: 0 means infer from the labels."""
    value = int(cfg_get(cfg, "num_classes") or 0)
    if value < 0 or value == 1:
        raise UserError(f"data.num_classes: {value} is invalid; pass 0 (infer) or a value >= 2")
    return value


def check_fraction(cfg: Any, key: str) -> float:
    """Fractions carved from train must leave train non-empty."""
    value = float(cfg_get(cfg, key))
    if not 0.0 <= value < 1.0:
        raise UserError(f"data.{key}: {value} is outside [0, 1); pass e.g. "
                        f"--config.data.{key}={section_defaults('data')[key]}")
    return value


def check_train_classes(y: np.ndarray, where: str) -> None:
    """Classification needs at least two classes to learn anything."""
    present = np.unique(y)
    if len(present) < 2:
        only = ", ".join(str(int(c)) for c in present) or "none"
        raise UserError(
            f"{where}: training labels contain {len(present)} class(es) (only: {only}); need at least 2")


def check_same_shape(x: np.ndarray, ref: np.ndarray, where: str, ref_where: str) -> None:
    """val/test rows must have the same per-row shape as train, or the model cannot be applied to them."""
    if x.shape[1:] != ref.shape[1:]:
        raise UserError(
            f"{where}: per-row shape {tuple(x.shape[1:])} differs from {ref_where} {tuple(ref.shape[1:])}; "
            "export all splits with the same shape")


def feature_stats(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 mean and floored std of the TRAIN features: the model's input statistics (saved with it)."""
    mean = train.mean(axis=0, dtype=np.float64)
    std = np.maximum(train.std(axis=0, dtype=np.float64), STD_FLOOR)
    return mean, std


def apply_standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The one z-score formula, shared by training and prediction so both see bit-identical inputs."""
    return ((x - mean) / std).astype(np.float32)


def standardize(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Z-score every split with TRAIN statistics (val/test stats would leak); std floored at 1e-6."""
    mean, std = feature_stats(train)
    return tuple(apply_standardize(a, mean, std) for a in (train, *others))


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean/std of x/255, in float64 chunks so a big uint8 set is never converted wholesale."""
    c = x.shape[-1]
    total = np.zeros(c, np.float64)
    total_sq = np.zeros(c, np.float64)
    for start in range(0, x.shape[0], chunk):
        block = x[start:start + chunk].reshape(-1, c).astype(np.float64) / 255.0
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
    count = x.size // c
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


def check_class_coverage(train_y: np.ndarray, num_classes: int, class_names: list[str], where: str,
                         explicit: bool) -> None:
    """Every class needs a training sample: an empty class (1-based labels, a missing grade) otherwise
    trains nothing and is averaged into macro metrics as zeros. With data.num_classes set on purpose it is
    a warning instead."""
    counts = np.bincount(np.asarray(train_y, np.int64), minlength=num_classes)
    empty = [c for c in range(num_classes) if counts[c] == 0]
    if not empty:
        return
    named = ", ".join(f"{c} ({class_names[c]!r})" if class_names[c] != str(c) else str(c) for c in empty)
    named = f"class {named} has" if len(empty) == 1 else f"classes {named} have"
    if explicit:
        warn(f"{where}: {named} no training sample (data.num_classes={num_classes}); they cannot be learned "
             "and count as 0 in macro metrics")
        return
    hint = " (labels look 1-based: subtract 1)" if empty == [0] else ""
    raise UserError(f"{where}: {named} no training sample among classes 0..{num_classes - 1}{hint}; relabel "
                    f"the classes as 0..K-1, or pass --config.data.num_classes={num_classes} to keep empty "
                    "classes on purpose")
