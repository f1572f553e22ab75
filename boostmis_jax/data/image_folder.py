"""Image folders: `root/<class>/*.png|jpg|jpeg` or `root/{train,val,test}/<class>/...`.

Class order is the sorted class-folder names of train. Images may sit in nested sub-folders of a class folder
(e.g. one per patient). Missing val/test are carved from train (stratified, seed 0).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from boostmis_jax.data import validate as V
from boostmis_jax.data.base import SPLITS, Dataset, RawSplit, assemble, register_source
from boostmis_jax.errors import UserError

HINT = "folder with one sub-folder per class, or train/val/test sub-folders"
EXTENSIONS = (".png", ".jpg", ".jpeg")
GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))


def _unreadable(path: Path, e: BaseException) -> UserError:
    return UserError(f"{path}: cannot read image ({V.one_line(e)}); remove or replace the file")


def _to_8bit(img: Image.Image, where: str) -> Image.Image:
    """16-bit PNGs (common for X-ray/CT exports) scale 0..65535 -> 0..255; Pillow's own convert would clip."""
    if img.mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.float64) / 257.0
        return Image.fromarray(np.round(arr).astype(np.uint8), mode="L")
    if img.mode in ("I", "F"):
        arr = np.asarray(img)
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255:
            raise UserError(f"{where}: {img.mode}-mode image with values outside 0..255; re-save it as 8-bit")
        return Image.fromarray(np.round(arr).astype(np.uint8), mode="L")
    return img


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N,H,W,C) uint8 to (N,size,size,C); non-square images are stretched."""
    if x.shape[1] == size and x.shape[2] == size:
        return x
    out = np.empty((x.shape[0], size, size, x.shape[3]), np.uint8)
    for i, img in enumerate(x):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        out[i] = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR)).reshape(size, size, -1)
    return out


_Ref = tuple[str, tuple[int, int]] | None  # (first file, its size): every later image must match it


def _load_images(files: list[Path], gray: bool, size: int, ref: _Ref) -> tuple[np.ndarray, _Ref]:
    """Decode, convert to L/RGB, resize or enforce one size; `ref` is the first file's (name, size)."""
    channels = 1 if gray else 3
    arrays = []
    for path in files:
        try:
            with Image.open(path) as img:
                img = _to_8bit(img, str(path)).convert("L" if gray else "RGB")
                if size:
                    img = img.resize((size, size), Image.Resampling.BILINEAR)
                elif ref is None:
                    ref = (str(path), img.size)
                elif img.size != ref[1]:
                    raise UserError(
                        f"{path}: size {img.size[0]}x{img.size[1]} differs from {ref[0]} "
                        f"({ref[1][0]}x{ref[1][1]}); pass --config.data.image_size=<side> to resize all")
                arrays.append(np.asarray(img, np.uint8).reshape(img.size[1], img.size[0], channels))
        except _READ_ERRORS as e:
            raise _unreadable(path, e) from None
    return np.stack(arrays), ref


def _is_gray(files: list[Path]) -> bool:
    """Header-only pass: keep one channel only when every image is gray, so RGB content is never dropped."""
    for path in files:
        try:
            with Image.open(path) as img:
                if img.mode not in GRAY_MODES:
                    return False
        except _READ_ERRORS as e:
            raise _unreadable(path, e) from None
    return True


@register_source("image_folder")
def load_image_folder(cfg: Any) -> Dataset:
    """train_ids are file paths relative to `data.path` (posix separators), so queries name real files."""
    root = V.require_dir(V.require_path(cfg, HINT), HINT)
    size = int(V.cfg_get(cfg, "image_size", 0) or 0)
    if size < 0:
        raise UserError(f"data.image_size: {size} is negative; pass 0 (keep) or a side length in pixels")
    top = _subdirs(root)
    split_layout = bool(top) and "train" in {p.name for p in top} and {p.name for p in top} <= set(SPLITS)
    split_dirs = {s: root / s for s in SPLITS if (root / s).is_dir()} if split_layout else {"train": root}
    train_dir = split_dirs["train"]
    class_dirs = _subdirs(train_dir)
    if not class_dirs:
        raise UserError(f"{train_dir}: no class sub-folders; put images in {train_dir}/<class name>/")
    classes = [p.name for p in class_dirs]
    num_classes = V.check_num_classes(cfg)
    if num_classes and len(classes) > num_classes:
        raise UserError(f"{class_dirs[num_classes]}: class folder #{num_classes + 1} of {len(classes)} "
                        f"but num_classes={num_classes}; pass --config.data.num_classes={len(classes)} "
                        "or remove the extra folders")

    files: dict[str, list[tuple[Path, int]]] = {}
    for split, folder in split_dirs.items():
        entries: list[tuple[Path, int]] = []
        for cdir in _subdirs(folder):
            if cdir.name not in classes:
                raise UserError(f"{cdir}: class folder not in {train_dir} ({', '.join(classes)}); "
                                "rename it to a training class or add it to train")
            found = _images_in(cdir)
            if split == "train" and not found:
                raise UserError(f"{cdir}: no {'/'.join(EXTENSIONS)} images; add images or remove the folder")
            entries += [(p, classes.index(cdir.name)) for p in found]
        files[split] = entries

    gray = _is_gray([p for entries in files.values() for p, _ in entries])
    splits: dict[str, RawSplit | None] = {s: None for s in SPLITS}
    ref = None
    for split, entries in files.items():
        if not entries:
            continue
        x, ref = _load_images([p for p, _ in entries], gray, size, ref)
        y = np.array([c for _, c in entries], np.int32)
        ids = [p.relative_to(root).as_posix() for p, _ in entries]
        splits[split] = RawSplit(x, y, str(split_dirs[split]), ids)
    if splits["train"] is None:
        raise UserError(f"{train_dir}: no training images; add images under {train_dir}/<class name>/")
    return assemble(root.resolve().name, "image", splits, cfg, classes)
