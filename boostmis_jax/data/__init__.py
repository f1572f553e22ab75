"""Data sources (registry), validation and labeled splits.

Importing this package registers every built-in source; add one with `@register_source("name")` on a
`(cfg) -> Dataset` function and select it with --config.data.source=name.
"""
from boostmis_jax.data import image_folder, medmnist, mescc, sklearn_sets  # noqa: F401  (registers sources)
from boostmis_jax.data.base import SOURCES, Dataset, load_dataset, register_source
from boostmis_jax.data.split import ensure_split, labeled_split, load_split_file, save_split

__all__ = [
    "SOURCES",
    "Dataset",
    "ensure_split",
    "labeled_split",
    "load_dataset",
    "load_split_file",
    "register_source",
    "save_split",
]
