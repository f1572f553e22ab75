"""MESCC feature release: a folder with `{train,val,test}-features.npy` (N,D), `{split}-targets.npy` (N,)."""
from __future__ import annotations

from typing import Any

from boostmis_jax.data import validate as V
from boostmis_jax.data.base import PATIENTS_NAME, SPLITS, Dataset, RawSplit, assemble, register_source

HINT = "folder holding train-features.npy and train-targets.npy"


@register_source("mescc_features")
def load_mescc_features(cfg: Any) -> Dataset:
    """Train is required; a split with neither file is carved from train (seed 0). Features are z-scored with
    train statistics. The release has 2- or 6-class targets; any K >= 2 is accepted. With data.group_by="patient",
    `patients.csv` in the folder maps train row indices (id) to patients."""
    root = V.require_dir(V.require_path(cfg, HINT), HINT)
    splits: dict[str, RawSplit | None] = {}
    for split in SPLITS:
        fx, fy = root / f"{split}-features.npy", root / f"{split}-targets.npy"
        if split != "train" and not fx.exists() and not fy.exists():
            splits[split] = None
            continue
        x = V.check_features(V.load_npy(V.require_file(fx, HINT)), str(fx))
        y = V.check_labels(V.load_npy(V.require_file(fy, HINT)), len(x), str(fy),
                           rows_of=f"rows in {fx.name}")
        splits[split] = RawSplit(x, y, str(fy), x_where=str(fx))
    return assemble(root.resolve().name or "mescc", "features", splits, cfg,
                    patients_csv=root / PATIENTS_NAME)
