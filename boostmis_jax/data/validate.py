"""Input checks shared by every data source.

Every check raises `UserError` with ONE line that names the offending file (and key/row where it helps) and
the fix, so a bad data file fails before any compilation instead of deep inside a jitted step.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# The data keys' defaults and their config check live in defaults.py (the one home of config checks, so
# the import goes one way); re-exported here for the loaders.
from boostmis_jax.defaults import (  # noqa: F401
    GROUP_BY, LABEL_BALANCES, cfg_get, check_data_options, section_defaults)
from boostmis_jax.errors import UserError, boundary, cap_list
from boostmis_jax.fsutil import kind_of

STD_FLOOR = 1e-6


def one_line(text: object) -> str:
    """Collapse an exception message to a single line (main prints exactly one line)."""
    return " ".join(str(text).split())


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
        raise UserError(f"{show_path(path)}: is {kind_of(path)}, expected a file; pass "
                        f"--config.data.path=<{hint}>")
    return path


def require_dir(path: Path, hint: str) -> Path:
    """Like `require_file` for sources whose `data.path` is a folder."""
    if not path.exists():
        raise UserError(f"{show_path(path)}: folder not found; pass --config.data.path=<{hint}>")
    if not path.is_dir():
        raise UserError(f"{show_path(path)}: is {kind_of(path)}, expected a folder; pass "
                        f"--config.data.path=<{hint}>")
    return path


def check_folder_layout(root: Path, names: list[str], splits: tuple[str, ...]) -> None:
    """A folder is either split folders (train/ val/ test/) or class folders. Split names beside other
    folders (train/ test/ holdout/, train/ unlabeled/) would silently make 'train', 'test' and 'holdout'
    three classes: refuse, naming both readings."""
    split_like = sorted(n for n in names if n in splits)
    other = sorted(n for n in names if n not in splits)
    if split_like and other:
        raise UserError(f"{root}: holds split folders ({', '.join(split_like)}) beside other folders "
                        f"({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}); keep only "
                        f"{'/, '.join(splits)}/ there (move the others out), or, if these are all classes, "
                        "rename the class folders named like splits")


def warn_split_classes(y: np.ndarray, where: str) -> None:
    """An explicit split labelling one class only: supervised training sees one class; say so."""
    present = np.unique(np.asarray(y))
    if len(y) and len(present) < 2:
        warn(f"{where}: the labeled rows are all class {int(present[0])}; the first stage learns one class "
             "only (add rows of the other classes to the split file)")


def warn(msg: str) -> None:
    """A one-line warning on stderr: something to know that does not stop the run."""
    print(f"warning: {msg}", file=sys.stderr)


NPZ_FIX = "re-export it with numpy.savez (or fetch the file again)"


class NpzArrays(Mapping):
    """An .npz archive's members, read on first use (then kept): a source reads only the arrays it names,
    so an unused 3 GB member costs nothing, and a damaged member fails naming the file and the member."""

    def __init__(self, path: Path):
        self.path = path
        with boundary(path, NPZ_FIX, "not a readable .npz archive"):
            archive = np.load(path, allow_pickle=False)
            if isinstance(archive, np.ndarray):
                raise UserError(f"{path}: is a single .npy array, expected an .npz archive of named arrays; "
                                "save them with numpy.savez")
            with archive:
                self._names = list(archive.files)
        self._read: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._read:
            if key not in self._names:
                raise KeyError(key)
            with boundary(f"{self.path} [{key}]", NPZ_FIX, "not a readable array"), \
                    np.load(self.path, allow_pickle=False) as archive:
                self._read[key] = np.asarray(archive[key])
        return self._read[key]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def load_npz(path: Path) -> NpzArrays:
    """The archive's member names now, each array when first used (see NpzArrays)."""
    return NpzArrays(path)


def load_npy(path: Path) -> np.ndarray:
    """Read one .npy file without pickle (object arrays are rejected, since they can run code)."""
    with boundary(path, "re-export it with numpy.save", "not a readable .npy file"):
        array = np.load(path, allow_pickle=False)
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


MAX_CLASSES = 10_000  # a (K, K) confusion matrix and K-wide heads: beyond this a label is a typo, not a class


def check_num_classes(cfg: Any) -> int:
    """`data.num_classes`: 0 means infer from the labels."""
    value = int(cfg_get(cfg, "num_classes") or 0)
    if value < 0 or value == 1:
        raise UserError(f"data.num_classes: {value} is invalid; pass 0 (infer) or a value >= 2")
    if value > MAX_CLASSES:
        raise UserError(f"data.num_classes: {value:,} classes is more than this tool supports "
                        f"({MAX_CLASSES:,}); pass the real number of classes (0 infers it from the labels)")
    return value


def check_inferred_classes(y: np.ndarray, where: str) -> None:
    """num_classes = max label + 1: one stray huge label (an id, a typo) must not allocate a (K, K) matrix."""
    if len(y) and int(y.max()) + 1 > MAX_CLASSES:
        row = int(np.argmax(y))
        raise UserError(f"{where}: label {int(y[row]):,} at row {row} would make {int(y[row]) + 1:,} classes "
                        f"(at most {MAX_CLASSES:,}); labels are class indices 0..K-1: relabel them")


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
    # A constant channel (an unused colour, a blank band) normalises to 0, not to 0/0 = NaN.
    return mean.astype(np.float32), np.maximum(std, STD_FLOOR).astype(np.float32)


def check_not_constant(x: np.ndarray, where: str) -> None:
    """Nothing to learn: images whose every pixel is equal (blank or all-black exports, a DICOM window that
    clips everything) or feature rows that are all identical. It would surface much later as a NaN loss or
    chance accuracy blamed on the learning rate."""
    if len(x) == 0:
        return
    first = x[:1]
    if x.ndim == 4:
        if any(x[i:i + 256].min() != first.flat[0] or x[i:i + 256].max() != first.flat[0]
               for i in range(0, len(x), 256)):
            return  # chunked min/max: real data differs in its first chunk
        what = f"every training image is constant (all pixels = {first.flat[0]})"
    else:
        if len(x) < 2 or any(not (x[i:i + 256] == first).all() for i in range(0, len(x), 256)):
            return
        what = f"all {len(x)} training rows are identical"
    raise UserError(f"{where}: {what}, so there is nothing to learn; check the files (blank exports? a DICOM "
                    "window that clips everything?)")


def check_classes_in_train(y: np.ndarray, train_y: np.ndarray, where: str, train_where: str) -> None:
    """A val/test label that train never has: name the split and row that hold it, not train. (Train rows of
    unknown class, labels < 0, could be any class: then nothing is claimed.)"""
    if len(train_y) and np.min(train_y) < 0:
        return
    missing = np.setdiff1d(np.unique(y), np.unique(train_y))
    if len(missing):
        row = int(np.argmax(np.isin(y, missing)))
        more = f" (and {len(missing) - 1} more such class(es))" if len(missing) > 1 else ""
        raise UserError(f"{where}: class {int(y[row])} (row {row}) has no sample in {train_where}{more}; add "
                        "training samples of it, or drop those rows")


def check_class_coverage(train_y: np.ndarray, num_classes: int, class_names: list[str], where: str,
                         explicit: bool) -> None:
    """Every class needs a training sample: an empty class (1-based labels, a missing grade) otherwise
    trains nothing and is averaged into macro metrics as zeros. With data.num_classes set on purpose it is
    a warning instead."""
    counts = np.bincount(np.asarray(train_y, np.int64), minlength=num_classes)
    empty = [c for c in range(num_classes) if counts[c] == 0]
    if not empty:
        return
    named = cap_list((f"{c} ({class_names[c]!r})" if class_names[c] != str(c) else str(c) for c in empty), 10)
    named = f"class {named} has" if len(empty) == 1 else f"classes {named} have"
    if explicit:
        warn(f"{where}: {named} no training sample (data.num_classes={num_classes}); they cannot be learned "
             "and count as 0 in macro metrics")
        return
    hint = " (labels look 1-based: subtract 1)" if empty == [0] else ""
    raise UserError(f"{where}: {named} no training sample among classes 0..{num_classes - 1}{hint}; relabel "
                    f"the classes as 0..K-1, or pass --config.data.num_classes={num_classes} to keep empty "
                    "classes on purpose")
