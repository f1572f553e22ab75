"""Image folders: `root/<class>/*.png|jpg|jpeg|dcm` or `root/{train,val,test}/<class>/...`; and `dicom_folder`,
the same layout holding DICOM files only (`.dcm`, or no suffix with the DICM preamble).

Unlabeled mode: with `data.class_names="normal,pneumonia"` and no sub-folder of that name, every image
under `root` (or `root/train`), in any sub-folders except `val/` and `test/`, is an unlabeled pool row
(label -1, labels come from the oracle; data.num_labels=0). Labeled `root/val/<class>/` and
`root/test/<class>/` folders are read when present; without a test folder the test metrics are computed
on the validation images (a warning says so).

Class order is the sorted class-folder names of train (or data.class_names' order when given). Images may sit in nested sub-folders of a class folder
(e.g. one per patient). Missing val/test are carved from train (stratified, seed 0). With
data.group_by="patient" the patient of each file comes from `root/patients.csv` (id = the file's path
relative to root, as in train_ids) or, for DICOM files, from their PatientID.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from boostmis_jax.data import dicom
from boostmis_jax.data import validate as V
from boostmis_jax.data.base import PATIENTS_NAME, SPLITS, Dataset, RawSplit, assemble, register_source
from boostmis_jax.errors import UserError

HINT = "folder with one sub-folder per class, or train/val/test sub-folders"
DICOM_HINT = "folder of DICOM files with one sub-folder per class, or train/val/test sub-folders"
EXTENSIONS = (".png", ".jpg", ".jpeg")
GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def is_image(path: Path) -> bool:
    """What image_folder reads: PNG/JPEG by suffix, and DICOM."""
    return path.suffix.lower() in EXTENSIONS or dicom.is_dicom(path)


def subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def images_in(folder: Path, accept: Callable[[Path], bool] = is_image) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith(".") and accept(p))


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


def open_image(path: Path, opts: dicom.DicomOptions) -> Image.Image:
    """One file as an 8-bit L or RGB-able PIL image: the only decoder, shared by training and prediction."""
    if dicom.is_dicom(path):
        return Image.fromarray(dicom.read_dicom(path, opts))
    try:
        with Image.open(path) as img:
            img.load()
            return _to_8bit(img, str(path))
    except _READ_ERRORS as e:
        raise _unreadable(path, e) from None


def is_gray_file(path: Path) -> bool:
    """Header-only: one channel? (PIL mode, DICOM SamplesPerPixel)."""
    if dicom.is_dicom(path):
        return dicom.header(path)[0] == 1
    try:
        with Image.open(path) as img:
            return img.mode in GRAY_MODES
    except _READ_ERRORS as e:
        raise _unreadable(path, e) from None


_Ref = tuple[str, tuple[int, int]] | None  # (first file, its size): every later image must match it
SIZE_FIX = "pass --config.data.image_size=<side> to resize all"


def load_images(files: list[Path], channels: int, size: int, ref: _Ref = None,
                opts: dicom.DicomOptions | None = None, size_fix: str = SIZE_FIX
                ) -> tuple[np.ndarray, _Ref]:
    """Decode, convert to L/RGB, resize or enforce one size; `ref` is the first file's (name, size).

    A colour file only becomes one channel when its channels are equal (gray content saved as RGB): a
    1-channel model must never silently see a colour image's luminance."""
    opts = opts or dicom.DicomOptions()
    arrays = []
    for path in files:
        img = open_image(path, opts)
        if channels == 1 and img.mode not in GRAY_MODES:
            rgb = np.asarray(img.convert("RGB"))
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise UserError(f"{path}: colour image, but the model takes 1-channel (gray) images; "
                                "convert it to grayscale")
        try:
            img = img.convert("L" if channels == 1 else "RGB")
        except _READ_ERRORS as e:
            raise _unreadable(path, e) from None
        if size:
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        elif ref is None:
            ref = (str(path), img.size)
        elif img.size != ref[1]:
            raise UserError(
                f"{path}: size {img.size[0]}x{img.size[1]} differs from {ref[0]} "
                f"({ref[1][0]}x{ref[1][1]}); {size_fix}")
        arrays.append(np.asarray(img, np.uint8).reshape(img.size[1], img.size[0], channels))
    return np.stack(arrays), ref


def _is_gray(files: list[Path]) -> bool:
    """Keep one channel only when every image is gray, so RGB content is never dropped."""
    return all(is_gray_file(p) for p in files)


def _dicom_patients(files: list[Path]) -> list[str] | None:
    """PatientID of every file when all are DICOM (else None: patients.csv must say)."""
    if not all(dicom.is_dicom(p) for p in files):
        return None
    out = []
    for path in files:
        pid = dicom.header(path)[1]
        if not pid:
            raise UserError(f"{path}: DICOM file without PatientID; set it, or list every file in "
                            f"{PATIENTS_NAME} (id,patient) next to the class folders")
        out.append(pid)
    return out


def load_folder(cfg: Any, accept: Callable[[Path], bool], hint: str, what: str) -> Dataset:
    """train_ids are file paths relative to `data.path` (posix separators), so queries name real files."""
    V.check_data_options(cfg)
    root = V.require_dir(V.require_path(cfg, hint), hint)
    size = int(V.cfg_get(cfg, "image_size") or 0)
    if size < 0:
        raise UserError(f"data.image_size: {size} is negative; pass 0 (keep) or a side length in pixels")
    opts = dicom.DicomOptions.from_cfg(cfg)
    names = class_names_of(cfg)
    pool_dir = root / "train" if (root / "train").is_dir() else root
    if names and not any((pool_dir / n).is_dir() for n in names):
        return load_unlabeled(cfg, root, pool_dir, names, accept, what, size, opts)
    top = subdirs(root)
    V.check_folder_layout(root, [p.name for p in top], SPLITS)
    split_layout = bool(top) and "train" in {p.name for p in top} and {p.name for p in top} <= set(SPLITS)
    split_dirs = {s: root / s for s in SPLITS if (root / s).is_dir()} if split_layout else {"train": root}
    train_dir = split_dirs["train"]
    class_dirs = subdirs(train_dir)
    if not class_dirs:
        raise UserError(f"{train_dir}: no class sub-folders; put images in {train_dir}/<class name>/")
    classes = [p.name for p in class_dirs]
    if names:
        extra = [c for c in classes if c not in names]
        if extra:
            raise UserError(f"{train_dir / extra[0]}: class folder not in data.class_names "
                            f"({', '.join(names)}); rename it or add it to --config.data.class_names")
        classes = names
    num_classes = V.check_num_classes(cfg)
    if num_classes and len(classes) > num_classes:
        raise UserError(f"{class_dirs[num_classes]}: class folder #{num_classes + 1} of {len(classes)} "
                        f"but num_classes={num_classes}; pass --config.data.num_classes={len(classes)} "
                        "or remove the extra folders")

    files: dict[str, list[tuple[Path, int]]] = {}
    for split, folder in split_dirs.items():
        entries: list[tuple[Path, int]] = []
        for cdir in subdirs(folder):
            if cdir.name not in classes:
                raise UserError(f"{cdir}: class folder not in {train_dir} ({', '.join(classes)}); "
                                "rename it to a training class or add it to train")
            found = images_in(cdir, accept)
            if split == "train" and not found:
                raise UserError(f"{cdir}: no {what} files; add images or remove the folder")
            entries += [(p, classes.index(cdir.name)) for p in found]
        files[split] = entries

    gray = _is_gray([p for entries in files.values() for p, _ in entries])
    grouped = str(V.cfg_get(cfg, "group_by") or "") == "patient" and not (root / PATIENTS_NAME).is_file()
    splits: dict[str, RawSplit | None] = {s: None for s in SPLITS}
    ref = None
    for split, entries in files.items():
        if not entries:
            continue
        paths = [p for p, _ in entries]
        x, ref = load_images(paths, 1 if gray else 3, size, ref, opts)
        y = np.array([c for _, c in entries], np.int32)
        ids = [p.relative_to(root).as_posix() for p in paths]
        groups = _dicom_patients(paths) if grouped else None
        splits[split] = RawSplit(x, y, str(split_dirs[split]), ids, groups=groups)
    if splits["train"] is None:
        raise UserError(f"{train_dir}: no training images; add images under {train_dir}/<class name>/")
    return assemble(root.resolve().name, "image", splits, cfg, classes, patients_csv=root / PATIENTS_NAME)


def class_names_of(cfg: Any) -> list[str]:
    """`data.class_names` ("a,b,c") as a list; [] when unset. Names must be distinct and non-empty."""
    text = str(V.cfg_get(cfg, "class_names") or "").strip()
    if not text:
        return []
    names = [n.strip() for n in text.split(",")]
    if any(not n for n in names) or len(set(names)) != len(names) or len(names) < 2:
        raise UserError(f"data.class_names: {text!r} needs two or more distinct, non-empty names; pass "
                        f"--config.data.class_names=normal,pneumonia")
    return names


def _labeled_split_dir(folder: Path, names: list[str], accept, what: str) -> list[tuple[Path, int]]:
    entries = []
    for cdir in subdirs(folder):
        if cdir.name not in names:
            raise UserError(f"{cdir}: class folder not in data.class_names ({', '.join(names)}); rename it "
                            f"to one of them")
        entries += [(p, names.index(cdir.name)) for p in images_in(cdir, accept)]
    if not entries:
        raise UserError(f"{folder}: no labeled {what} files; put them in {folder}/<class name>/ or remove it")
    return entries


def load_unlabeled(cfg: Any, root: Path, pool_dir: Path, names: list[str], accept, what: str, size: int,
                   opts) -> Dataset:
    """An unlabeled pool (label -1 everywhere) plus optional labeled val/test class folders."""
    if int(V.cfg_get(cfg, "num_labels")) != 0 or str(V.cfg_get(cfg, "split_file") or ""):
        raise UserError(f"{pool_dir}: images without class sub-folders (data.class_names given) carry no "
                        f"labels; pass --config.data.num_labels=0 and let the oracle label them")
    if str(V.cfg_get(cfg, "group_by") or ""):
        raise UserError("data.group_by=patient: not supported for an unlabeled folder yet; pass "
                        "--config.data.group_by=''")
    num_classes = V.check_num_classes(cfg)
    if num_classes and num_classes != len(names):
        raise UserError(f"data.num_classes={num_classes} but data.class_names names {len(names)}; pass "
                        f"--config.data.num_classes=0")
    held = [root / s for s in ("val", "test")]
    pool = [p for p in images_in(pool_dir, accept)
            if pool_dir != root or not any(h in p.parents for h in held)]
    if not pool:
        raise UserError(f"{pool_dir}: no {what} files; put the unlabeled images there")
    labeled = {s: _labeled_split_dir(root / s, names, accept, what) for s in ("val", "test")
               if (root / s).is_dir()}
    share = float(V.cfg_get(cfg, "val_share"))
    if "val" not in labeled and not 0 < share < 1:
        raise UserError(f"{root}: no labeled validation images and data.val_share={share}; put some under "
                        f"{root}/val/<class name>/ (class names: {', '.join(names)}) or pass "
                        f"--config.data.val_share=0.2 to hold out a share of the answers")
    gray = _is_gray(pool + [p for entries in labeled.values() for p, _ in entries])
    ch = 1 if gray else 3
    train_x, ref = load_images(pool, ch, size, None, opts)
    out = {}
    for s, entries in labeled.items():
        x, ref = load_images([p for p, _ in entries], ch, size, ref, opts)
        out[s] = (x, np.array([c for _, c in entries], np.int32), [p.relative_to(root).as_posix()
                                                                    for p, _ in entries])
    if "val" not in out:  # filled from held-out answers as they arrive (selfsup.hold_out_answers)
        out["val"] = (train_x[:0], np.zeros(0, np.int32), [])
        V.warn(f"{root}: no labeled val folder; a share data.val_share={share} of each round's answers is "
               f"held out as validation")
    if "test" not in out:
        V.warn(f"{root}: no labeled test folder; test metrics are computed on the validation images (not an "
               f"unbiased estimate); add {root}/test/<class name>/ for one")
        out["test"] = out["val"]
    mean, std = V.channel_stats(train_x)
    return Dataset(name=root.resolve().name, kind="image", train_x=train_x,
                   train_y=np.full(len(pool), -1, np.int32), val_x=out["val"][0], val_y=out["val"][1],
                   test_x=out["test"][0], test_y=out["test"][1], num_classes=len(names), class_names=names,
                   train_ids=[p.relative_to(root).as_posix() for p in pool], mean=mean, std=std,
                   val_ids=out["val"][2], test_ids=out["test"][2])


@register_source("image_folder")
def load_image_folder(cfg: Any) -> Dataset:
    """PNG/JPEG/DICOM files under class folders."""
    return load_folder(cfg, is_image, HINT, f"{'/'.join(EXTENSIONS)}/.dcm image")


@register_source("dicom_folder")
def load_dicom_folder(cfg: Any) -> Dataset:
    """DICOM files only (other files, e.g. a DICOMDIR or notes, are ignored)."""
    return load_folder(cfg, dicom.is_dicom, DICOM_HINT, "DICOM")
