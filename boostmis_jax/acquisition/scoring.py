"""Pool scoring: the selector registry and ONE jitted pass that scores the whole pool with every selector.

The pass runs the model once per chunk (eval mode, so BatchNorm statistics stay clean) and shares its
outputs (logits, probabilities, entropy, embeddings and, when asked, VAT scores, k-NN density, core-set
distances) with every selector, so adding a selector costs no extra forward. The loop builds one `Scorer`
per run (`make_scorer`); it compiles once per pool shape/sharding and is reused every cycle with new weights
and masks. Inputs may be sharded along N (NamedSharding(mesh, P('data'))): the chunked pass then loops over
steps holding rows of every shard (see layout.py), and per-row results do not depend on the sharding.

Candidates. The paper sends to annotation "the unselected unlabeled images with low confidence": with
`candidates='low_confidence'` only unlabeled rows whose confidence is below the current pseudo-label
threshold `tau` compete; when fewer than `need` (the cycle's total picks) qualify, the least confident
unlabeled rows fill up to `need`. `candidates='all'` scores every unlabeled row.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from boostmis_jax.acquisition.coreset import coreset_greedy
from boostmis_jax.acquisition.density import knn_density
from boostmis_jax.acquisition.layout import constrain_rows, from_steps, infer_shards, row_sharding, to_steps
from boostmis_jax.acquisition.vat import VAT_STREAM, ApplyFn, VatParams, forward_and_vat
from boostmis_jax.errors import UserError

KNOWN_NEEDS = frozenset({"vat", "density", "coreset"})
RANDOM_STREAM = 1  # fold_in stream of the acquisition key used by `random` (VAT noise uses stream 0)
EPS_IMAGES, EPS_FEATURES = 2.0, 1.0  # VAT radius when al.vat_eps is unset: [0,1] images vs standardized features
CANDIDATES = ("low_confidence", "all")
DENSITIES = ("degree", "cosine")


# ======================================================================================================
# Selector registry
# ======================================================================================================
class PoolContext(NamedTuple):
    """Everything the shared pool pass computed; optional extras are None unless a selector needs them."""

    logits: jax.Array      # (N, C) float32, zeros on invalid rows
    probs: jax.Array       # (N, C)
    entropy: jax.Array     # (N,)
    emb: jax.Array         # (N, E) penultimate features
    candidate: jax.Array   # (N,) bool: rows that may be picked
    labeled: jax.Array     # (N,) bool
    valid: jax.Array       # (N,) bool: real (non-padded) rows
    rows: jax.Array        # (N,) int32 global row index
    key: jax.Array         # acquisition PRNG key
    vat: Any = None        # (N,) LDS score                         needs "vat"
    density: Any = None    # (N,) kNN density in [0, 1]              needs "density"
    coreset: Any = None    # (idx, pick_dist, final_mindist) or (None, None, mindist)  needs "coreset"


Selector = Callable[[PoolContext], jax.Array]
SELECTORS: dict[str, Selector] = {}


def register_selector(name: str, *, needs: tuple[str, ...] = (),
                      balanced: bool = False) -> Callable[[Selector], Selector]:
    """Decorator adding `fn(ctx) -> (N,) scores, higher = annotate first` to SELECTORS under `name`.

    `needs` names the expensive extras the pass must compute; `balanced` makes `select` pick top-K//C per
    predicted class."""
    unknown = set(needs) - KNOWN_NEEDS
    if unknown:
        raise ValueError(f"register_selector({name!r}): unknown needs {sorted(unknown)}; use {sorted(KNOWN_NEEDS)}")

    def deco(fn: Selector) -> Selector:
        fn.needs = frozenset(needs)  # type: ignore[attr-defined]
        fn.balanced = balanced  # type: ignore[attr-defined]
        SELECTORS[name] = fn
        return fn

    return deco


def needs_of(name: str) -> frozenset:
    return getattr(SELECTORS[name], "needs", frozenset())


def is_balanced(name: str) -> bool:
    return bool(getattr(SELECTORS[name], "balanced", False))


def parse_selectors(selectors: str | Sequence[str]) -> tuple[str, ...]:
    """The one parser of `al.selectors`: "aus+bus" (or a sequence) -> known, distinct names, order kept
    (it is the tie/dedup priority)."""
    if isinstance(selectors, str):
        selectors = tuple(s.strip() for s in selectors.replace(",", "+").split("+") if s.strip())
    selectors = tuple(selectors)
    unknown = [s for s in selectors if s not in SELECTORS]
    if not selectors or unknown:
        raise UserError(f"al.selectors: unknown or empty {unknown or list(selectors)}; use '+'-joined names "
                        f"from {sorted(SELECTORS)}")
    if len(set(selectors)) != len(selectors):
        raise UserError(f"al.selectors: {list(selectors)} repeats a name; list each selector once")
    return selectors


@register_selector("aus", needs=("vat",))
def _aus(ctx: PoolContext) -> jax.Array:
    """Adversarial unstable selector: prediction change under the VAT perturbation."""
    return ctx.vat


@register_selector("bus", needs=("density",), balanced=True)
def _bus(ctx: PoolContext) -> jax.Array:
    """Balanced uncertain selector: uncertain AND representative (dense region) samples."""
    return ctx.entropy * ctx.density


@register_selector("random")
def _random(ctx: PoolContext) -> jax.Array:
    stream = jax.random.fold_in(ctx.key, RANDOM_STREAM)
    return jax.vmap(lambda r: jax.random.uniform(jax.random.fold_in(stream, r)))(ctx.rows)


@register_selector("entropy")
def _entropy(ctx: PoolContext) -> jax.Array:
    return ctx.entropy


@register_selector("margin")
def _margin(ctx: PoolContext) -> jax.Array:
    if ctx.probs.shape[-1] < 2:
        return jnp.zeros(ctx.probs.shape[:1], jnp.float32)
    top2 = jax.lax.top_k(ctx.probs, 2)[0]
    return -(top2[:, 0] - top2[:, 1])


@register_selector("least_confidence")
def _least_confidence(ctx: PoolContext) -> jax.Array:
    return 1.0 - jnp.max(ctx.probs, axis=-1)


@register_selector("coreset", needs=("coreset",))
def _coreset(ctx: PoolContext) -> jax.Array:
    """Squared distance to the nearest center. With a budget, picked rows carry their pick-time distance
    (>= every later one), so top-K of this score reproduces the greedy k-center order."""
    idx, pick_dist, mind = ctx.coreset
    if idx is not None:
        safe = jnp.where(idx >= 0, idx, mind.shape[0])
        mind = mind.at[safe].set(pick_dist, mode="drop")
    return jnp.minimum(mind, jnp.finfo(jnp.float32).max)  # no labeled centers: +inf -> finite


# ======================================================================================================
# The chunked forward pass shared by every selector
# ======================================================================================================
def entropy_from_logits(logits: jax.Array) -> jax.Array:
    """Shannon entropy (nats) per row."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def chunked_pass(apply_fn: ApplyFn, variables: Any, x: jax.Array, valid: jax.Array, key: jax.Array | None,
                 *, chunk: int, vat: VatParams | None, shards: int,
                 rows_sharding: NamedSharding | None) -> dict:
    """lax.map over chunks; logits, probs, emb, entropy (+ vat) with zeros on invalid rows.

    VAT noise of row r comes from fold_in(fold_in(key, VAT_STREAM), r), so chunking never changes it."""
    rs = rows_sharding
    rows = jnp.arange(x.shape[0], dtype=jnp.int32)
    vat_key = jax.random.fold_in(key, VAT_STREAM) if vat is not None else None

    def body(args: tuple) -> dict:
        xb, rb = (constrain_rows(a, rs) for a in args)
        if vat is None:
            logits, emb = apply_fn(variables, xb)
            out = {}
        else:
            logits, emb, _, score = forward_and_vat(apply_fn, variables, xb, rb, vat_key, vat)
            out = {"vat": score}
        out["logits"] = logits.astype(jnp.float32)
        out["emb"] = emb.reshape(emb.shape[0], -1).astype(jnp.float32)
        return {name: constrain_rows(v, rs) for name, v in out.items()}

    xs = constrain_rows(to_steps(x, shards, chunk), rs, 1)
    steps = jax.lax.map(body, (xs, constrain_rows(to_steps(rows, shards, chunk), rs, 1)))
    out = {name: from_steps(v, shards, chunk) for name, v in steps.items()}
    out["logits"] = jnp.where(valid[:, None], out["logits"], 0.0)
    out["emb"] = jnp.where(valid[:, None], out["emb"], 0.0)
    out["probs"] = jax.nn.softmax(out["logits"], axis=-1)
    out["entropy"] = jnp.where(valid, entropy_from_logits(out["logits"]), 0.0)
    if "vat" in out:
        out["vat"] = jnp.where(valid, out["vat"], 0.0)
    return out


def low_confidence(unlabeled: jax.Array, conf: jax.Array, tau: jax.Array, need: int) -> jax.Array:
    """Unlabeled rows below `tau`, filled up to `need` with the least confident others (see module doc)."""
    n_low = jnp.sum(unlabeled & (conf < tau))
    order = jnp.argsort(jnp.where(unlabeled, conf, jnp.inf), stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    return unlabeled & (rank < jnp.maximum(n_low, need))


# ======================================================================================================
# The scorer the loop builds once
# ======================================================================================================
class Scorer:
    """`scorer(variables, x, unlabeled, labeled, key, tau) -> {"probs", "pred", "emb", "candidate",
    "scores": {name: (N,) float32, -inf off-candidate}, ["coreset_idx"]}`, one jitted call.

    N must be a multiple of `chunk` (pad; padded rows are neither unlabeled nor labeled). `compiles` counts
    how many times the pass was traced (one per pool shape/sharding)."""

    def __init__(self, apply_fn: ApplyFn, *, selectors: tuple[str, ...], budget: int, chunk: int, knn_k: int,
                 knn_block: int, vat_xi: float, vat_eps: float | None, vat_ip: int, density: str,
                 candidates: str):
        self.apply_fn, self.selectors, self.budget = apply_fn, parse_selectors(selectors), int(budget)
        self.chunk, self.knn_k, self.knn_block = int(chunk), int(knn_k), int(knn_block)
        self.vat_xi, self.vat_eps, self.vat_ip = float(vat_xi), vat_eps, int(vat_ip)
        self.density, self.candidates = density, candidates
        self.needs = frozenset().union(*(needs_of(s) for s in self.selectors))
        self.compiles = 0
        self._jitted: dict = {}

    def __call__(self, variables: Any, x: jax.Array, unlabeled: Any, labeled: Any, key: jax.Array,
                 tau: float = 1.0) -> dict:
        n = x.shape[0]
        if n % self.chunk:
            raise UserError(f"al.chunk: pool size {n} is not a multiple of chunk {self.chunk}; pad the pool "
                            f"(mark padded rows invalid) or pick a chunk that divides {n}")
        shards = infer_shards(x, self.chunk)
        rs = row_sharding(x, shards)
        fn = self._jitted.get((shards, rs))
        if fn is None:
            fn = self._jitted[(shards, rs)] = jax.jit(partial(self._impl, shards=shards, rows_sharding=rs))
        return fn(variables, x, jnp.asarray(unlabeled, bool), jnp.asarray(labeled, bool), key,
                  jnp.asarray(tau, jnp.float32))

    def _impl(self, variables, x, unlabeled, labeled, key, tau, *, shards, rows_sharding) -> dict:
        self.compiles += 1  # runs only while tracing
        unlabeled = unlabeled & ~labeled
        valid = unlabeled | labeled
        vat = None
        if "vat" in self.needs:
            eps = self.vat_eps if self.vat_eps is not None else (EPS_IMAGES if x.ndim > 2 else EPS_FEATURES)
            vat = VatParams(self.vat_xi, float(eps), self.vat_ip)
        out = chunked_pass(self.apply_fn, variables, x, valid, key, chunk=self.chunk, vat=vat, shards=shards,
                           rows_sharding=rows_sharding)
        candidate = unlabeled
        if self.candidates == "low_confidence":
            conf = jnp.max(out["probs"], axis=-1)
            candidate = low_confidence(unlabeled, conf, tau, self.budget * len(self.selectors))
        extras = {}
        if "density" in self.needs:
            pool = candidate if self.density == "degree" else valid
            extras["density"] = knn_density(out["emb"], pool, k=self.knn_k, block=self.knn_block,
                                            kind=self.density, shards=shards, rows_sharding=rows_sharding)
        if "coreset" in self.needs:
            # ranks enough centers to back-fill rows the selectors before it already took
            extras["coreset"] = coreset_greedy(out["emb"], candidate, labeled, self.budget * len(self.selectors))
        ctx = PoolContext(logits=out["logits"], probs=out["probs"], entropy=out["entropy"], emb=out["emb"],
                          candidate=candidate, labeled=labeled, valid=valid,
                          rows=jnp.arange(x.shape[0], dtype=jnp.int32), key=key, vat=out.get("vat"), **extras)
        scores = {name: jnp.where(candidate, SELECTORS[name](ctx).astype(jnp.float32), -jnp.inf)
                  for name in self.selectors}
        res = {"probs": out["probs"], "pred": jnp.argmax(out["logits"], axis=-1).astype(jnp.int32),
               "emb": out["emb"], "candidate": candidate, "scores": scores}
        if "coreset" in extras:
            res["coreset_idx"] = extras["coreset"][0]
        return res


def make_scorer(apply_fn: ApplyFn, **settings: Any) -> Scorer:
    """One per run: `apply_fn(variables, x) -> (logits, emb)` in eval mode; settings as `Scorer` takes them
    (the loop passes the `al` config section's values)."""
    return Scorer(apply_fn, **settings)


__all__ = ["SELECTORS", "PoolContext", "Scorer", "chunked_pass", "make_scorer", "parse_selectors", "register_selector"]
