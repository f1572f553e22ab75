"""MedMNIST `.npz` files: `{train,val,test}_images` (N,H,W) or (N,H,W,3) uint8 and `{split}_labels`."""
from __future__ import annotations

from typing import Any

from boostmis_jax.data import validate as V
from boostmis_jax.data.base import PATIENTS_NAME, SPLITS, Dataset, RawSplit, assemble, register_source
from boostmis_jax.data.image_folder import resize_images
from boostmis_jax.errors import UserError

HINT = "MedMNIST .npz file, e.g. ../shared/data/pneumoniamnist.npz"


@register_source("medmnist_npz")
def load_medmnist_npz(cfg: Any) -> Dataset:
    """Train is required; a split whose images AND labels are both absent is carved from train (seed 0).

    data.image_size > 0 resizes (bilinear), e.g. to train a 224px model on 28px MedMNIST.
    Multi-label MedMNIST sets (ChestMNIST, labels (N,14)) are rejected: the method is single-label.
    With data.group_by="patient", `patients.csv` beside the file maps train row indices (id) to patients.
    """
    path = V.require_file(V.require_path(cfg, HINT), HINT)
    arrays = V.load_npz(path)
    V.require_keys(arrays, ["train_images", "train_labels"], path)
    splits: dict[str, RawSplit | None] = {}
    for split in SPLITS:
        xk, yk = f"{split}_images", f"{split}_labels"
        if xk not in arrays and yk not in arrays:
            splits[split] = None
            continue
        V.require_keys(arrays, [xk, yk], path)
        x = V.check_images(arrays[xk], f"{path} [{xk}]")
        y = V.check_labels(arrays[yk], len(x), f"{path} [{yk}]", rows_of=f"rows in {xk}")
        splits[split] = RawSplit(x, y, f"{path} [{yk}]", x_where=f"{path} [{xk}]")
    size = int(V.cfg_get(cfg, "image_size") or 0)
    if size < 0:
        raise UserError(f"data.image_size: {size} is negative; pass 0 (keep) or a side length in pixels")
    if size:
        for split in splits.values():
            if split is not None:
                split.x = resize_images(split.x, size)
    return assemble(path.stem, "image", splits, cfg, patients_csv=path.parent / PATIENTS_NAME)
