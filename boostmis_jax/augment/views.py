"""Batched (weak, strong) view builders for the SSL train step.

Why: the train step is one jitted function whose batch may be sharded along axis 0, so views are built by
vmapping pure per-example functions over one PRNG key per example; nothing mixes examples.
Kinds live in a registry so new input modalities can add their own pair of views.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from boostmis_jax.augment.features import strong_features, weak_features
from boostmis_jax.augment.image import strong_image, weak_image
from boostmis_jax.defaults import section_defaults
from boostmis_jax.errors import UserError

# (key, x) -> (weak, strong): per example for kind builders, per batch for what make_views returns.
ViewFn = Callable[[jax.Array, jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray]]
# A kind builder takes the `aug` config and returns a per-example (key, x) -> (weak, strong) function.
KindBuilder = Callable[[Any], ViewFn]
VIEW_KINDS: dict[str, KindBuilder] = {}


def register(name: str) -> Callable[[KindBuilder], KindBuilder]:
    """Add a view kind under `name` (the value of `make_views(kind, ...)`)."""

    def deco(fn: KindBuilder) -> KindBuilder:
        VIEW_KINDS[name] = fn
        return fn

    return deco


def _get(cfg: Any, key: str) -> Any:
    """An `aug` key; one the (possibly partial) section leaves out is defaults.py's value."""
    v = cfg.get(key)
    return section_defaults("aug")[key] if v is None else v


def _num(cfg: Any, key: str, lo: float, hi: float, *, hi_open: bool = False) -> float:
    v = _get(cfg, key)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and lo <= v and (v < hi if hi_open else v <= hi)
    if not ok:
        bound = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
        raise UserError(f"config aug.{key}: {v!r} is not a number in {bound}; set it inside that range")
    return float(v)


def _bool(cfg: Any, key: str) -> bool:
    v = _get(cfg, key)
    if not isinstance(v, bool):
        raise UserError(f"config aug.{key}: {v!r} is not a bool; set it to True or False")
    return v


def _int(cfg: Any, key: str, lo: int, hi: int) -> int:
    v = _get(cfg, key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise UserError(f"config aug.{key}: {v!r} is not an integer in [{lo}, {hi}]; set one in that range")
    return v


@register("image")
def _image_views(cfg: Any) -> ViewFn:
    flip = _bool(cfg, "flip")
    pad_frac = _num(cfg, "pad_frac", 0.0, 0.5)
    num_ops = _int(cfg, "num_ops", 0, 16)
    magnitude = _num(cfg, "magnitude", 0.0, 10.0)
    cut = _num(cfg, "cutout", 0.0, 1.0)

    def views(key: jax.Array, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        kw, ks = jax.random.split(key)
        weak = weak_image(kw, x, flip=flip, pad_frac=pad_frac)
        strong = strong_image(ks, x, num_ops=num_ops, magnitude=magnitude, cutout=cut, flip=flip,
                              pad_frac=pad_frac)
        return weak, strong

    return views


@register("features")
def _feature_views(cfg: Any) -> ViewFn:
    sw = _num(cfg, "feat_sigma_weak", 0.0, math.inf)
    ss = _num(cfg, "feat_sigma_strong", 0.0, math.inf)
    drop = _num(cfg, "feat_drop", 0.0, 1.0, hi_open=True)

    def views(key: jax.Array, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        kw, ks = jax.random.split(key)
        return weak_features(kw, x, sigma=sw), strong_features(ks, x, sigma=ss, drop=drop)

    return views


def make_views(kind: str, cfg: Any = None) -> ViewFn:
    """Return views(keys, x) -> (weak, strong), vmapped over axis 0.

    keys: (B,) typed PRNG keys or (B, 2) uint32 raw keys; x: (B, ...) float. Per example the weak and the
    strong keys are split from that example's key, so results do not depend on how the batch is sharded.
    """
    if kind not in VIEW_KINDS:
        raise UserError(f"config aug kind {kind!r}: unknown; use one of {', '.join(sorted(VIEW_KINDS))}")
    per_example = VIEW_KINDS[kind]({} if cfg is None else cfg)
    batched = jax.vmap(per_example)

    def views(keys: jax.Array, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        if not jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):
            keys = jax.random.wrap_key_data(keys)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise UserError(f"augment: batch dtype is {x.dtype}; convert inputs to float32 scaled to [0, 1]")
        if kind == "image" and x.ndim != 4:
            raise UserError(f"augment: image batch has shape {tuple(x.shape)}; pass (B, H, W, C)")
        if x.ndim < 1 or keys.shape[:1] != x.shape[:1]:
            raise UserError(f"augment: {keys.shape[:1]} keys for a batch of shape {tuple(x.shape)}; "
                            "pass one key per example")
        return batched(keys, x)

    return views
