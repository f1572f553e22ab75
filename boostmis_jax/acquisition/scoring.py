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
import numpy as np
from jax.sharding import NamedSharding

from boostmis_jax.acquisition.badge import badge_order
from boostmis_jax.acquisition.coreset import coreset_greedy
from boostmis_jax.acquisition.coverage import probcover_order
from boostmis_jax.acquisition.density import knn_density
from boostmis_jax.acquisition.kmeans import gumbel_rows, kmeans, l2_normalize
from boostmis_jax.acquisition.layout import constrain_rows, from_steps, infer_shards, row_sharding, to_steps
from boostmis_jax.acquisition.typicality import typiclust_order
from boostmis_jax.acquisition.vat import (
    VAT_STREAM,
    ApplyFn,
    VatParams,
    calibrate_radius,
    forward_and_vat_grid,
    radius_grid,
)
from boostmis_jax.errors import UserError

KNOWN_NEEDS = frozenset({"vat", "density", "coreset"})
# fold_in streams of the acquisition key: VAT noise 0, `random` 1, selectors' k-means 2, al.batch=cluster 3,
# al.batch=stochastic 4 (+ selector position), badge 5, `balanced_random` 6
RANDOM_STREAM, KMEANS_STREAM, CLUSTER_STREAM, STOCHASTIC_STREAM, BADGE_STREAM = 1, 2, 3, 4, 5
BALANCED_RANDOM_STREAM = 6
# top of the VAT radius grid (al.vat_eps unset): [0,1] images vs standardized features; the old fixed radii
EPS_IMAGES, EPS_FEATURES = 2.0, 1.0
CANDIDATES = ("low_confidence", "all")
DENSITIES = ("degree", "cosine")
BATCHES = ("topk", "cluster", "stochastic")


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
    unlabeled: Any = None  # (N,) bool: every unlabeled real row (the pool of `whole_pool` selectors)
    need: int = 0          # static: picks an ordered selector must rank (the round's size)
    num_classes: int = 0   # static


Selector = Callable[[PoolContext], jax.Array]
SELECTORS: dict[str, Selector] = {}


def register_selector(name: str, *, needs: tuple[str, ...] = (), balanced: bool = False,
                      ordered: bool = False, whole_pool: bool = False) -> Callable[[Selector], Selector]:
    """Decorator adding `fn(ctx) -> (N,) scores, higher = annotate first` to SELECTORS under `name`.

    `needs` names the expensive extras the pass must compute; `balanced` makes `select` fill per-class
    quotas; `ordered` selectors return `(scores, order)`, order (ctx.need,) row indices (-1 = none) that
    `select` takes first (they build their own diverse batch); `whole_pool` selectors pick among every
    unlabeled row whatever al.candidates says."""
    unknown = set(needs) - KNOWN_NEEDS
    if unknown:
        raise ValueError(f"register_selector({name!r}): unknown needs {sorted(unknown)}; "
                         f"use {sorted(KNOWN_NEEDS)}")

    def deco(fn: Selector) -> Selector:
        fn.needs = frozenset(needs)  # type: ignore[attr-defined]
        fn.balanced = balanced  # type: ignore[attr-defined]
        fn.ordered = ordered  # type: ignore[attr-defined]
        fn.whole_pool = whole_pool  # type: ignore[attr-defined]
        SELECTORS[name] = fn
        return fn

    return deco


def needs_of(name: str) -> frozenset:
    return getattr(SELECTORS[name], "needs", frozenset())


def is_balanced(name: str) -> bool:
    return bool(getattr(SELECTORS[name], "balanced", False))


def is_ordered(name: str) -> bool:
    return bool(getattr(SELECTORS[name], "ordered", False))


def is_whole_pool(name: str) -> bool:
    return bool(getattr(SELECTORS[name], "whole_pool", False))


def parse_stages(selectors: str | Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """`al.selectors` -> stages of known names: "typiclust>aus+bus" -> (("typiclust",), ("aus", "bus"));
    a plain "aus+bus" (or a sequence of names) is one stage. Names are distinct across all stages."""
    if isinstance(selectors, str):
        parts = [p for p in selectors.split(">")]
        stages = tuple(tuple(s.strip() for s in p.replace(",", "+").split("+") if s.strip()) for p in parts)
    else:
        stages = (tuple(selectors),)
    flat = [s for st in stages for s in st]
    unknown = [s for s in flat if s not in SELECTORS]
    if not flat or unknown or any(not st for st in stages):
        bad = unknown or list(flat) or selectors
        raise UserError(f"al.selectors: unknown or empty {bad!r}; use '+'-joined "
                        f"names from {sorted(SELECTORS)}, stages joined by '>' (e.g. typiclust>aus+bus)")
    if len(set(flat)) != len(flat):
        raise UserError(f"al.selectors: {list(flat)} repeats a name; list each selector once")
    return stages


def parse_selectors(selectors: str | Sequence[str]) -> tuple[str, ...]:
    """The one parser of `al.selectors`: every known, distinct name over all stages, order kept (it is the
    tie/dedup priority). Use `round_size` for the labels a round asks for."""
    return tuple(s for st in parse_stages(selectors) for s in st)


def round_size(selectors: str | Sequence[str], budget: int) -> int:
    """Rows one round annotates: al.budget per selector of the LAST stage (earlier stages label the same
    number, split over their selectors)."""
    return int(budget) * len(parse_stages(selectors)[-1])


@register_selector("aus", needs=("vat",))
def _aus(ctx: PoolContext) -> jax.Array:
    """Adversarial unstable selector: prediction change under the VAT perturbation."""
    return ctx.vat


@register_selector("bus", needs=("density",), balanced=True)
def _bus(ctx: PoolContext) -> jax.Array:
    """Balanced uncertain selector: uncertain AND representative (dense region) samples."""
    return ctx.entropy * ctx.density


def _uniform_per_row(ctx: PoolContext, stream: int) -> jax.Array:
    """U(0, 1) per row from (acquisition key, stream, global row index): independent of chunking/sharding."""
    key = jax.random.fold_in(ctx.key, stream)
    return jax.vmap(lambda r: jax.random.uniform(jax.random.fold_in(key, r)))(ctx.rows)


@register_selector("random")
def _random(ctx: PoolContext) -> jax.Array:
    return _uniform_per_row(ctx, RANDOM_STREAM)


@register_selector("balanced_random", balanced=True)
def _balanced_random(ctx: PoolContext) -> jax.Array:
    """Random picks under BUS's class quotas (al.balance): class-balanced random sampling, the strong
    baseline of imbalanced AL (Aggarwal et al., WACV 2020; Bengar et al., WACV 2022); its own stream, so
    it never repeats `random`'s draw."""
    return _uniform_per_row(ctx, BALANCED_RANDOM_STREAM)


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


@register_selector("coreset", needs=("coreset",), ordered=True)
def _coreset(ctx: PoolContext) -> tuple[jax.Array, jax.Array]:
    """Greedy k-center (Sener & Savarese, ICLR 2018). Score: squared distance to the nearest center; picked
    rows carry their pick-time distance (>= every later one), so top-K reproduces the greedy order."""
    idx, pick_dist, mind = ctx.coreset
    if idx is not None:
        safe = jnp.where(idx >= 0, idx, mind.shape[0])
        mind = mind.at[safe].set(pick_dist, mode="drop")
    return jnp.minimum(mind, jnp.finfo(jnp.float32).max), idx  # no labeled centers: +inf -> finite


def _order_score(order: jax.Array, base: jax.Array) -> jax.Array:
    """A score that ranks `order` first (in its order), then the rest by `base` (finite, any sign)."""
    n, m = base.shape[0], order.shape[0]
    b = jnp.where(jnp.isfinite(base), base, 0.0)
    lo, hi = jnp.min(b), jnp.max(b)
    rest = (b - lo) / jnp.where(hi > lo, hi - lo, 1.0)  # [0, 1]
    pos = jnp.full((n,), -1.0).at[jnp.where(order >= 0, order, n)].set(
        jnp.arange(m, 0, -1, dtype=jnp.float32), mode="drop")
    return jnp.where(pos > 0, 1.0 + pos, rest)


@register_selector("typiclust", ordered=True, whole_pool=True)
def _typiclust(ctx: PoolContext) -> tuple[jax.Array, jax.Array]:
    """TypiClust (Hacohen et al., ICML 2022): the most typical row of each uncovered cluster
    (typicality.py)."""
    order, typ = typiclust_order(ctx.emb, ctx.unlabeled, ctx.labeled, ctx.valid,
                                 jax.random.fold_in(ctx.key, KMEANS_STREAM), budget=ctx.need)
    return _order_score(order, typ), order


@register_selector("probcover", ordered=True, whole_pool=True)
def _probcover(ctx: PoolContext) -> tuple[jax.Array, jax.Array]:
    """ProbCover (Yehuda et al., NeurIPS 2022): max coverage of delta-balls, delta from purity
    (coverage.py)."""
    order, first, _ = probcover_order(ctx.emb, ctx.unlabeled, ctx.labeled, ctx.valid,
                                      jax.random.fold_in(ctx.key, KMEANS_STREAM), None, budget=ctx.need,
                                      clusters=max(2, ctx.num_classes))
    return _order_score(order, first.astype(jnp.float32)), order


@register_selector("badge", ordered=True)
def _badge(ctx: PoolContext) -> tuple[jax.Array, jax.Array]:
    """BADGE (Ash et al., ICLR 2020): k-means++ seeding on last-layer gradient embeddings (badge.py)."""
    order, norm2 = badge_order(ctx.probs, ctx.emb, ctx.candidate, jax.random.fold_in(ctx.key, BADGE_STREAM),
                               budget=ctx.need)
    return _order_score(order, norm2), order


# ======================================================================================================
# The chunked forward pass shared by every selector
# ======================================================================================================
def entropy_from_logits(logits: jax.Array) -> jax.Array:
    """Shannon entropy (nats) per row."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def chunked_pass(apply_fn: ApplyFn, variables: Any, x: jax.Array, valid: jax.Array, key: jax.Array | None,
                 *, chunk: int, vat: VatParams | None, shards: int,
                 rows_sharding: NamedSharding | None, vat_on: jax.Array | None = None) -> dict:
    """lax.map over chunks; logits, probs, emb, entropy (+ vat_kl, vat_flip (N, G) over vat.grid) with zeros
    on invalid rows. `vat_on` (traced bool, optional): compute the VAT part only when true (zeros else).

    VAT noise of row r comes from fold_in(fold_in(key, VAT_STREAM), r), so chunking never changes it."""
    rs = rows_sharding
    rows = jnp.arange(x.shape[0], dtype=jnp.int32)
    vat_key = jax.random.fold_in(key, VAT_STREAM) if vat is not None else None

    def body(args: tuple) -> dict:
        xb, rb = (constrain_rows(a, rs) for a in args)
        if vat is None:
            logits, emb = apply_fn(variables, xb)
            out = {}
        elif vat_on is None:
            logits, emb, kl, flip = forward_and_vat_grid(apply_fn, variables, xb, rb, vat_key, vat)
            out = {"vat_kl": kl, "vat_flip": flip}
        else:
            def plain(xb, rb):
                lg, em = apply_fn(variables, xb)
                g = len(vat.grid)
                return lg, em, jnp.zeros((xb.shape[0], g), jnp.float32), jnp.zeros((xb.shape[0], g), bool)

            def with_vat(xb, rb):
                lg, em, kl, flip = forward_and_vat_grid(apply_fn, variables, xb, rb, vat_key, vat)
                return lg, em, kl.astype(jnp.float32), flip

            logits, emb, kl, flip = jax.lax.cond(vat_on, with_vat, plain, xb, rb)
            out = {"vat_kl": kl, "vat_flip": flip}
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
    if "vat_kl" in out:
        out["vat_kl"] = jnp.where(valid[:, None], out["vat_kl"], 0.0)
        out["vat_flip"] = out["vat_flip"] & valid[:, None]
    return out


def low_confidence(unlabeled: jax.Array, conf: jax.Array, tau: jax.Array, need: int) -> jax.Array:
    """Unlabeled rows below `tau`, filled up to `need` with the least confident others (see module doc)."""
    n_low = jnp.sum(unlabeled & (conf < tau))
    order = jnp.argsort(jnp.where(unlabeled, conf, jnp.inf), stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    return unlabeled & (rank < jnp.maximum(n_low, need))


def softrank_gumbel(score: jax.Array, key: jax.Array, beta: float) -> jax.Array:
    """-beta * log(rank) + Gumbel noise on the finite scores (rank 1 = best, ties by lower row), -inf
    elsewhere: top-K of it samples K rows without replacement with p ~ rank^-beta (Kirsch et al. 2023)."""
    ok = jnp.isfinite(score)
    order = jnp.argsort(jnp.where(ok, -score, jnp.inf), stable=True)
    ranks = jnp.arange(1, score.shape[0] + 1, dtype=jnp.float32)
    rank = jnp.zeros(score.shape, jnp.float32).at[order].set(ranks)
    return jnp.where(ok, -beta * jnp.log(rank) + gumbel_rows(key, score.shape[0]), -jnp.inf)


# ======================================================================================================
# The scorer the loop builds once
# ======================================================================================================
class Scorer:
    """`scorer(variables, x, unlabeled, labeled, key, tau) -> {"probs", "logits", "pred", "emb", "candidate",
    "unlabeled", "scores": {name: (N,) float32, -inf where it may not pick}, "rank": {name: what `select`
    ranks by (the scores, or their stochastic perturbation)}, "orders": {name: (need,) int32} for ordered
    selectors, ["coreset_idx"], ["cluster"] (N,) int32 for al.batch=cluster, ["aus_eps", "aus_flip_rate",
    "aus_flip_rates"]}`, one jitted call.

    N must be a multiple of `chunk` (pad; padded rows are neither unlabeled nor labeled). `compiles` counts
    how many times the pass was traced (one per pool shape/sharding)."""

    def __init__(self, apply_fn: ApplyFn, *, selectors: Any, budget: int, chunk: int, knn_k: int,
                 knn_block: int, vat_xi: float, vat_eps: float | None, vat_ip: int, density: str,
                 candidates: str, batch: str = "topk", batch_beta: float = 1.0, flip_target: float = 0.1,
                 num_classes: int = 2, balance: str = "estimated", switch_per_class: int = 20):
        self.apply_fn, self.stages, self.budget = apply_fn, parse_stages(selectors), int(budget)
        self.selectors = tuple(s for st in self.stages for s in st)
        self.need = self.budget * len(self.stages[-1])  # the round's size
        self.chunk, self.knn_k, self.knn_block = int(chunk), int(knn_k), int(knn_block)
        self.vat_xi, self.vat_eps, self.vat_ip = float(vat_xi), vat_eps, int(vat_ip)
        self.density, self.candidates = density, candidates
        if batch not in BATCHES:
            raise UserError(f"al.batch={batch!r}: choose one of {list(BATCHES)}; set --config.al.batch=...")
        self.batch, self.batch_beta, self.flip_target = batch, float(batch_beta), float(flip_target)
        self.num_classes, self.balance = int(num_classes), balance
        self.switch_per_class = int(switch_per_class)
        self.needs = frozenset().union(*(needs_of(s) for s in self.selectors))
        self.compiles = 0
        self._jitted: dict = {}

    def __call__(self, variables: Any, x: jax.Array, unlabeled: Any, labeled: Any, key: jax.Array,
                 tau: float = 1.0, stage: int | None = None) -> dict:
        """`stage` (multi-stage selectors): compute only that stage's selectors and their extras (a traced
        switch, so no recompile); None computes every stage."""
        n = x.shape[0]
        if n % self.chunk:
            raise UserError(f"al.chunk: pool size {n} is not a multiple of chunk {self.chunk}; pad the pool "
                            f"(mark padded rows invalid) or pick a chunk that divides {n}")
        shards = infer_shards(x, self.chunk)
        rs = row_sharding(x, shards)
        fn = self._jitted.get((shards, rs))
        if fn is None:
            fn = self._jitted[(shards, rs)] = jax.jit(partial(self._impl, shards=shards, rows_sharding=rs))
        active = np.ones(len(self.selectors), bool)
        if stage is not None:
            active = np.array([name in self.stages[stage] for name in self.selectors])
        return fn(variables, x, jnp.asarray(unlabeled, bool), jnp.asarray(labeled, bool), key,
                  jnp.asarray(tau, jnp.float32), jnp.asarray(active))

    def vat_params(self, x: jax.Array) -> VatParams:
        """The radius grid (al.vat_eps: that one radius) and the inputs' valid range ([0,1] images)."""
        image = x.ndim > 2
        grid = (float(self.vat_eps),) if self.vat_eps is not None else radius_grid(
            EPS_IMAGES if image else EPS_FEATURES)
        return VatParams(self.vat_xi, grid[0], self.vat_ip, grid=grid, clip=(0.0, 1.0) if image else None)

    def _impl(self, variables, x, unlabeled, labeled, key, tau, active, *, shards, rows_sharding) -> dict:
        self.compiles += 1  # runs only while tracing
        unlabeled = unlabeled & ~labeled
        valid = unlabeled | labeled
        gated = len(self.stages) > 1  # single-stage scorers compute everything, no conditionals
        on = {name: active[j] for j, name in enumerate(self.selectors)}

        def any_on(need: str) -> jax.Array | None:
            if not gated:
                return None
            flags = [on[s] for s in self.selectors if need in needs_of(s)]
            return jnp.any(jnp.stack(flags)) if flags else None

        def maybe(flag: jax.Array | None, fn: Callable[[], Any]) -> Any:
            """fn() when flag (None = always), else zeros of its shapes (never read by the host)."""
            if flag is None:
                return fn()
            shapes = jax.eval_shape(fn)
            return jax.lax.cond(flag, fn, lambda: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes))

        vat = self.vat_params(x) if "vat" in self.needs else None
        out = chunked_pass(self.apply_fn, variables, x, valid, key, chunk=self.chunk, vat=vat, shards=shards,
                           rows_sharding=rows_sharding, vat_on=any_on("vat"))
        candidate = unlabeled
        if self.candidates == "low_confidence":
            conf = jnp.max(out["probs"], axis=-1)
            candidate = low_confidence(unlabeled, conf, tau, self.need)
        res = {"probs": out["probs"], "logits": out["logits"],
               "pred": jnp.argmax(out["logits"], axis=-1).astype(jnp.int32), "emb": out["emb"],
               "candidate": candidate, "unlabeled": unlabeled}
        extras = {}
        if vat is not None:
            g, rates = calibrate_radius(out["vat_flip"], candidate, self.flip_target)
            extras["vat"] = jnp.take_along_axis(out["vat_kl"], jnp.broadcast_to(g, (x.shape[0], 1)), 1)[:, 0]
            res.update(aus_eps=jnp.asarray(vat.grid, jnp.float32)[g], aus_flip_rate=rates[g],
                       aus_flip_rates=rates)
        if "density" in self.needs:
            # 'degree' over the whole unlabeled pool (not only the candidates): a row is representative of
            # the pool the model learns from, not of the low-confidence slice
            pool = unlabeled if self.density == "degree" else valid
            extras["density"] = maybe(any_on("density"), lambda: knn_density(
                out["emb"], pool, k=self.knn_k, block=self.knn_block, kind=self.density, shards=shards,
                rows_sharding=rows_sharding))
        if "coreset" in self.needs:
            # ranks enough centers to back-fill rows the selectors before it already took
            extras["coreset"] = maybe(any_on("coreset"),
                                      lambda: coreset_greedy(out["emb"], candidate, labeled, self.need))
        ctx = PoolContext(logits=out["logits"], probs=out["probs"], entropy=out["entropy"], emb=out["emb"],
                          candidate=candidate, labeled=labeled, valid=valid,
                          rows=jnp.arange(x.shape[0], dtype=jnp.int32), key=key, unlabeled=unlabeled,
                          need=self.need, num_classes=self.num_classes, **extras)
        scores, ranks, orders = {}, {}, {}
        for j, name in enumerate(self.selectors):
            r = maybe(on[name] if gated else None, partial(SELECTORS[name], ctx))
            if is_ordered(name):
                r, orders[name] = r
            mask = unlabeled if is_whole_pool(name) else candidate
            sc = jnp.where(mask, r.astype(jnp.float32), -jnp.inf)
            scores[name] = sc = jnp.where(jnp.isnan(sc), -jnp.inf, sc)
            ranks[name] = sc
            if self.batch == "stochastic" and not is_ordered(name):
                ranks[name] = softrank_gumbel(sc, jax.random.fold_in(key, STOCHASTIC_STREAM + 16 * j),
                                              self.batch_beta)
        res.update(scores=scores, rank=ranks, orders=orders)
        if "coreset" in extras:
            res["coreset_idx"] = orders["coreset"]
        if self.batch == "cluster":
            res["cluster"] = kmeans(l2_normalize(out["emb"]), candidate, self.need,
                                    jax.random.fold_in(key, CLUSTER_STREAM))[0]
        return res


def make_scorer(apply_fn: ApplyFn, **settings: Any) -> Scorer:
    """One per run: `apply_fn(variables, x) -> (logits, emb)` in eval mode; settings as `Scorer` takes them
    (the loop passes the `al` config section's values)."""
    return Scorer(apply_fn, **settings)


__all__ = ["BATCHES", "SELECTORS", "PoolContext", "Scorer", "chunked_pass", "make_scorer", "parse_selectors",
           "parse_stages", "register_selector", "round_size"]
