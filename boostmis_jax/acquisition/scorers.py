"""Selector registry: name -> scorer(ctx) giving a (N,) "higher = annotate first" score.

Scorers only read what the shared pool pass produced (`PoolContext`), so adding one costs no extra forward.
`register_scorer(name, needs=..., balanced=...)` declares which expensive extras the pass must compute
("vat", "density", "coreset") and whether `select` picks class-balanced (top-K//C per predicted class).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from boostmis_jax.errors import UserError

KNOWN_NEEDS = frozenset({"vat", "density", "coreset"})
RANDOM_STREAM = 1  # fold_in stream of the acquisition key used by `random` (VAT noise uses stream 0)


class PoolContext(NamedTuple):
    """Everything the shared pool pass computed; optional extras are None unless a selector needs them."""

    logits: jax.Array      # (N, C) float32, zeros on invalid rows
    probs: jax.Array       # (N, C)
    entropy: jax.Array     # (N,)
    emb: jax.Array         # (N, E) penultimate features
    candidate: jax.Array   # (N,) bool: valid & unlabeled
    labeled: jax.Array     # (N,) bool
    valid: jax.Array       # (N,) bool: candidate | labeled
    rows: jax.Array        # (N,) int32 global row index
    key: jax.Array         # acquisition PRNG key
    vat: Any = None        # (N,) LDS score                         needs "vat"
    density: Any = None    # (N,) kNN density in [0, 1]              needs "density"
    coreset: Any = None    # (idx, pick_dist, final_mindist) or (None, None, mindist)  needs "coreset"


Scorer = Callable[[PoolContext], jax.Array]
SCORERS: dict[str, Scorer] = {}


def register_scorer(name: str, *, needs: tuple[str, ...] = (),
                    balanced: bool = False) -> Callable[[Scorer], Scorer]:
    """Decorator adding `fn(ctx) -> (N,) scores` to SCORERS under `name`."""
    unknown = set(needs) - KNOWN_NEEDS
    if unknown:
        raise ValueError(f"register_scorer({name!r}): unknown needs {sorted(unknown)}; "
                         f"use {sorted(KNOWN_NEEDS)}")

    def deco(fn: Scorer) -> Scorer:
        fn.needs = frozenset(needs)  # type: ignore[attr-defined]
        fn.balanced = balanced  # type: ignore[attr-defined]
        SCORERS[name] = fn
        return fn

    return deco


def needs_of(name: str) -> frozenset:
    return getattr(SCORERS[name], "needs", frozenset())


def is_balanced(name: str) -> bool:
    return bool(getattr(SCORERS[name], "balanced", False))


def check_selectors(selectors: Any) -> tuple[str, ...]:
    """Normalize to a tuple of known, distinct names (order kept: it is the tie/dedup priority)."""
    if isinstance(selectors, str):  # "aus+bus" or "aus,bus"
        selectors = tuple(s.strip() for s in selectors.replace("+", ",").split(",") if s.strip())
    selectors = tuple(selectors)
    unknown = [s for s in selectors if s not in SCORERS]
    if not selectors or unknown:
        raise UserError(f"al.selectors: unknown or empty {unknown or list(selectors)}; "
                        f"choose from {sorted(SCORERS)}")
    if len(set(selectors)) != len(selectors):
        raise UserError(f"al.selectors: {list(selectors)} repeats a name; list each selector once")
    return selectors


@register_scorer("aus", needs=("vat",))
def _aus(ctx: PoolContext) -> jax.Array:
    """Adversarial unstable selector: prediction change under the VAT perturbation."""
    return ctx.vat


@register_scorer("bus", needs=("density",), balanced=True)
def _bus(ctx: PoolContext) -> jax.Array:
    """Balanced uncertain selector: uncertain AND representative (dense region) samples."""
    return ctx.entropy * ctx.density


@register_scorer("random")
def _random(ctx: PoolContext) -> jax.Array:
    stream = jax.random.fold_in(ctx.key, RANDOM_STREAM)
    return jax.vmap(lambda r: jax.random.uniform(jax.random.fold_in(stream, r)))(ctx.rows)


@register_scorer("entropy")
def _entropy(ctx: PoolContext) -> jax.Array:
    return ctx.entropy


@register_scorer("margin")
def _margin(ctx: PoolContext) -> jax.Array:
    if ctx.probs.shape[-1] < 2:
        return jnp.zeros(ctx.probs.shape[:1], jnp.float32)
    top2 = jax.lax.top_k(ctx.probs, 2)[0]
    return -(top2[:, 0] - top2[:, 1])


@register_scorer("least_confidence")
def _least_confidence(ctx: PoolContext) -> jax.Array:
    return 1.0 - jnp.max(ctx.probs, axis=-1)


@register_scorer("coreset", needs=("coreset",))
def _coreset(ctx: PoolContext) -> jax.Array:
    """Squared distance to the nearest center. With a budget, picked rows carry their pick-time distance
    (>= every later one), so top-K of this score reproduces the greedy k-center order."""
    idx, pick_dist, mind = ctx.coreset
    if idx is not None:
        safe = jnp.where(idx >= 0, idx, mind.shape[0])
        mind = mind.at[safe].set(pick_dist, mode="drop")
    return jnp.minimum(mind, jnp.finfo(jnp.float32).max)  # no labeled centers: +inf -> finite
