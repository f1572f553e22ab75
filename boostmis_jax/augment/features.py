"""Augmentations for feature vectors (tabular / precomputed embeddings), one example at a time.

Why: FixMatch needs a weak and a strong view of every unlabeled example; for non-image inputs the
natural analogue is small Gaussian noise (weak) and inverted dropout plus larger noise (strong).
Each function makes a single PRNG draw: every extra draw adds a threefry hash to the jitted train step.
"""
from __future__ import annotations

from statistics import NormalDist

import jax
import jax.numpy as jnp


def weak_features(key: jax.Array, x: jnp.ndarray, *, sigma: float = 0.05) -> jnp.ndarray:
    """x + sigma * N(0, 1); shape and dtype kept."""
    if sigma <= 0:
        return x
    noise = jax.random.normal(key, x.shape, jnp.float32)
    return (x.astype(jnp.float32) + sigma * noise).astype(x.dtype)


def strong_features(key: jax.Array, x: jnp.ndarray, *, sigma: float = 0.2, drop: float = 0.2) -> jnp.ndarray:
    """Inverted dropout (keep prob 1-drop, kept entries scaled by 1/(1-drop)) then + sigma * N(0, 1).

    The dropout mask comes from a second standard normal (z > Phi^-1(drop) has probability 1-drop), so
    mask and noise share one draw.
    """
    if drop <= 0 and sigma <= 0:
        return x
    z = jax.random.normal(key, (2, *x.shape), jnp.float32)
    y = x.astype(jnp.float32)
    if drop > 0:
        keep = z[1] > NormalDist().inv_cdf(drop)
        y = jnp.where(keep, y / (1.0 - drop), 0.0)
    if sigma > 0:
        y = y + sigma * z[0]
    return y.astype(x.dtype)
