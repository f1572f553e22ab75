"""Acquisition settings read from the `al` config section into a hashable, validated record.

Hashable because the values are static arguments of the jitted pool scorer: equal settings must hit the same
compiled executable.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from boostmis_jax.errors import UserError

# Defaults used when a key is missing from the `al` section. `vat_eps=None` means "by input rank":
# 2.0 for images (rank > 2 pools), 1.0 for feature vectors.
DEFAULTS: dict[str, Any] = {
    "vat_xi": 1e-6,
    "vat_eps": None,
    "vat_ip": 1,
    "knn_k": 10,
    "chunk": 1000,
    "knn_block": 2048,
}
EPS_IMAGES = 2.0
EPS_FEATURES = 1.0


@dataclasses.dataclass(frozen=True)
class AcqConfig:
    """Validated acquisition settings (see DEFAULTS for the meaning of each key)."""

    vat_xi: float = DEFAULTS["vat_xi"]
    vat_eps: float | None = DEFAULTS["vat_eps"]
    vat_ip: int = DEFAULTS["vat_ip"]
    knn_k: int = DEFAULTS["knn_k"]
    chunk: int = DEFAULTS["chunk"]
    knn_block: int = DEFAULTS["knn_block"]

    def eps_for(self, x_ndim: int) -> float:
        """VAT radius: the configured one, else 2.0 for image pools and 1.0 for feature pools."""
        if self.vat_eps is not None:
            return float(self.vat_eps)
        return EPS_IMAGES if x_ndim > 2 else EPS_FEATURES


def _get(cfg: Any, name: str) -> Any:
    if cfg is None:
        return DEFAULTS[name]
    if isinstance(cfg, Mapping):
        return cfg.get(name, DEFAULTS[name])
    try:  # ml_collections.ConfigDict / FrozenConfigDict / simple namespaces
        return getattr(cfg, name)
    except (AttributeError, KeyError):
        return DEFAULTS[name]


def _positive_int(cfg: Any, name: str, minimum: int) -> int:
    value = _get(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"al.{name}: got {value!r}, expected an integer >= {minimum}; "
                        f"set config.al.{name} (default {DEFAULTS[name]})")
    return int(value)


def _positive_float(cfg: Any, name: str, allow_none: bool) -> float | None:
    value = _get(cfg, name)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserError(f"al.{name}: got {value!r}, expected a number > 0; "
                        f"set config.al.{name} (default {DEFAULTS[name]})")
    return float(value)


def read_config(cfg: Any) -> AcqConfig:
    """Read and validate the `al` section (ConfigDict, mapping, AcqConfig or None for defaults)."""
    if isinstance(cfg, AcqConfig):
        return cfg
    return AcqConfig(
        vat_xi=_positive_float(cfg, "vat_xi", allow_none=False),
        vat_eps=_positive_float(cfg, "vat_eps", allow_none=True),
        vat_ip=_positive_int(cfg, "vat_ip", 0),
        knn_k=_positive_int(cfg, "knn_k", 1),
        chunk=_positive_int(cfg, "chunk", 1),
        knn_block=_positive_int(cfg, "knn_block", 1),
    )
