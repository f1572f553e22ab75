"""`score_pool`: the whole pool scored by every selector in ONE jitted call, pool kept on device.

Compiled once per (apply_fn, selectors, settings, pool shape/sharding) and cached, so each AL stage with a
new candidate mask or new weights reuses the executable. Inputs may be sharded along N
(NamedSharding(mesh, P('data'))); the chunked passes then loop over steps that hold rows of every shard
(see layout.py), and per-row results do not depend on the sharding.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from boostmis_jax.acquisition.config import AcqConfig, read_config
from boostmis_jax.acquisition.coreset import coreset_greedy, min_dist_to_centers
from boostmis_jax.acquisition.density import knn_density
from boostmis_jax.acquisition.layout import infer_shards, row_sharding
from boostmis_jax.acquisition.pool import ApplyFn, check_chunk, chunked_pass
from boostmis_jax.acquisition.scorers import SCORERS, PoolContext, check_selectors, needs_of
from boostmis_jax.acquisition.vat import VatParams
from boostmis_jax.errors import UserError

_CACHE: dict = {}
_CACHE_MAX = 32


def _impl(variables: Any, x: jax.Array, candidate: jax.Array, labeled: jax.Array, key: jax.Array, *,
          apply_fn: ApplyFn, selectors: tuple[str, ...], cfg: AcqConfig, shards: int,
          rows_sharding: NamedSharding | None, budget: int | None) -> dict:
    labeled = labeled.astype(bool)
    candidate = candidate.astype(bool) & ~labeled
    valid = candidate | labeled
    needs = frozenset().union(*(needs_of(s) for s in selectors))
    vat = VatParams(cfg.vat_xi, cfg.eps_for(x.ndim), cfg.vat_ip) if "vat" in needs else None
    out = chunked_pass(apply_fn, variables, x, valid, key, chunk=cfg.chunk,
                       vat=vat, shards=shards, rows_sharding=rows_sharding)
    density = None
    if "density" in needs:
        density = knn_density(out["emb"], valid, k=cfg.knn_k, block=cfg.knn_block, shards=shards,
                              rows_sharding=rows_sharding)
    coreset = None
    if "coreset" in needs:
        if budget is None:
            coreset = (None, None, min_dist_to_centers(out["emb"], labeled))
        else:
            coreset = coreset_greedy(out["emb"], candidate, labeled, budget)
    ctx = PoolContext(logits=out["logits"], probs=out["probs"], entropy=out["entropy"], emb=out["emb"],
                      candidate=candidate, labeled=labeled, valid=valid,
                      rows=jnp.arange(x.shape[0], dtype=jnp.int32), key=key,
                      vat=out.get("vat"), density=density, coreset=coreset)
    scores = {name: jnp.where(candidate, SCORERS[name](ctx).astype(jnp.float32), -jnp.inf)
              for name in selectors}
    res = {"probs": out["probs"], "pred": jnp.argmax(out["logits"], axis=-1).astype(jnp.int32),
           "emb": out["emb"], "scores": scores}
    if coreset is not None and coreset[0] is not None:
        res["coreset_idx"] = coreset[0]
    return res


def _compiled(apply_fn: ApplyFn, selectors: tuple[str, ...], cfg: AcqConfig, shards: int,
              rows_sharding: NamedSharding | None, budget: int | None) -> Any:
    key = (apply_fn, selectors, cfg, shards, rows_sharding, budget)
    fn = _CACHE.get(key)
    if fn is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        fn = jax.jit(partial(_impl, apply_fn=apply_fn, selectors=selectors, cfg=cfg, shards=shards,
                             rows_sharding=rows_sharding, budget=budget))
        _CACHE[key] = fn
    return fn


def score_pool(apply_fn: ApplyFn, variables: Any, x: jax.Array, candidate: jax.Array, labeled: jax.Array,
               key: jax.Array, *, selectors: tuple[str, ...], cfg: Any, budget: int | None = None) -> dict:
    """Score the pool with every selector in one jitted pass.

    Returns {"probs" (N,C), "pred" (N,), "emb" (N,E), "scores": {name: (N,) float32, -inf off-candidate}}
    (+ "coreset_idx" (budget,) when `coreset` is selected and `budget` given: the greedy k-center picks).
    `apply_fn(variables, x_batch) -> (logits, emb)` in eval mode; pass the SAME function object every stage
    (it keys the compile cache). N must be a multiple of cfg.chunk (pad; padded rows are neither candidate
    nor labeled); sharding N over devices*chunk keeps each device on its own rows.
    """
    conf = read_config(cfg)
    selectors = check_selectors(selectors)
    n = x.shape[0]
    for name, arr in (("candidate", candidate), ("labeled", labeled)):
        if tuple(getattr(arr, "shape", ())) != (n,):
            shape = getattr(arr, "shape", None)
            raise UserError(f"acquisition {name}: shape {shape} does not match the pool ({n},); "
                            "pass one bool per pool row")
    check_chunk(n, conf.chunk)
    if isinstance(key, int):
        key = jax.random.key(key)
    uses_budget = any("coreset" in needs_of(s) for s in selectors)
    if uses_budget and budget is not None and (not isinstance(budget, int) or budget < 0):
        raise UserError(f"al.budget: got {budget!r}; expected an integer >= 0")
    shards = infer_shards(x, conf.chunk)
    fn = _compiled(apply_fn, selectors, conf, shards, row_sharding(x, shards),
                   budget if uses_budget else None)
    return fn(variables, x, candidate, labeled, key)
