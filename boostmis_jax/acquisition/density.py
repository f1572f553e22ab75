"""Local density of each pool row: mean cosine similarity to its k nearest valid neighbours.

Blocked so memory stays O(block^2 + N*k) at any pool size: query blocks (lax.map) against key blocks
(lax.scan), merging a running top-k. The per-block top-k is the expensive non-matmul part on CPU, so it is
cut down with a group-max prefilter (see `_block_topk`). With the pool sharded along N, each device scores its
own query rows against all (gathered) keys inside shard_map: GSPMD cannot partition the TopK custom call and
would otherwise replicate every top-k on every device.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from boostmis_jax.acquisition.layout import infer_shards, row_sharding
from boostmis_jax.errors import UserError

GROUP = 16


def _block_topk(sim: jax.Array, k: int) -> jax.Array:
    """Top-k values per row of a (Q, B) block.

    Exact: split each row into groups of GROUP; the k largest entries lie in the k groups with the largest
    maxima (a group holding a top-k entry has at most k-1 groups with a larger max), so one cheap max pass
    plus top-k over B/GROUP maxima and over k*GROUP gathered values replaces a top-k over all B values.
    """
    q, b = sim.shape
    if b % GROUP != 0 or b // GROUP <= k:
        return jax.lax.top_k(sim, min(k, b))[0]
    groups = sim.reshape(q, b // GROUP, GROUP)
    _, gi = jax.lax.top_k(jnp.max(groups, axis=-1), k)
    picked = jnp.take_along_axis(groups, gi[:, :, None], axis=1).reshape(q, k * GROUP)
    return jax.lax.top_k(picked, k)[0]


def _pick_block(rows: int, block: int) -> int:
    """Largest block <= `block` dividing `rows` (no padding needed), or 0 when only tiny ones do."""
    top = min(block, rows)
    for b in range(top, max(top // 4, 1) - 1, -1):
        if rows % b == 0:
            return b
    return 0


def _top_sims(q: jax.Array, qrows: jax.Array, keys: jax.Array, key_ok: jax.Array, k: int,
              block: int) -> jax.Array:
    """(nq, k) largest similarities of each query to valid keys other than itself (-inf where none).

    nq and the key count must be multiples of `block`."""
    nk = keys.shape[0]
    kb_all = keys.reshape(nk // block, block, keys.shape[1])
    ok_all = key_ok.reshape(nk // block, block)
    starts = jnp.arange(0, nk, block, dtype=jnp.int32)
    kk = min(k, nk)

    def per_query_block(args: tuple) -> jax.Array:
        qb, qr = args

        def merge(best: jax.Array, key_args: tuple) -> tuple[jax.Array, None]:
            kb, ok, start = key_args
            sim = jnp.clip(qb @ kb.T, -1.0, 1.0)
            ok = ok[None, :] & ((start + jnp.arange(block, dtype=jnp.int32))[None, :] != qr[:, None])
            both = jnp.concatenate([best, _block_topk(jnp.where(ok, sim, -jnp.inf), kk)], axis=1)
            return jax.lax.top_k(both, kk)[0], None

        init = jnp.full((qb.shape[0], kk), -jnp.inf, jnp.float32)
        best, _ = jax.lax.scan(merge, init, (kb_all, ok_all, starts))
        return best

    nq = q.shape[0]
    steps = (q.reshape(nq // block, block, q.shape[1]), qrows.reshape(nq // block, block))
    best = jax.lax.map(per_query_block, steps)
    return best.reshape(nq, kk)


def knn_density(emb: jax.Array, valid: jax.Array, *, k: int, block: int, shards: int | None = None,
                rows_sharding: NamedSharding | None = None) -> jax.Array:
    """(N,) density in [0, 1]: mean over the k most cosine-similar VALID rows (self excluded) of (1+s)/2.

    Rows with fewer than k valid neighbours average over those they have; invalid rows (and rows with no
    neighbour) get 0 and are never anyone's neighbour. Jitted; callable inside other jits (pass `shards` and
    `rows_sharding` there, see layout.py).
    """
    if k < 1 or block < 1:
        raise UserError(f"al.knn_k/al.knn_block: got k={k}, block={block}; both must be integers >= 1")
    if shards is None:
        shards = infer_shards(emb, 1)
        rows_sharding = row_sharding(emb, shards)
    return _knn_density(emb, valid, k=k, block=block, shards=shards, rows_sharding=rows_sharding)


@partial(jax.jit, static_argnames=("k", "block", "shards", "rows_sharding"))
def _knn_density(emb: jax.Array, valid: jax.Array, *, k: int, block: int, shards: int,
                 rows_sharding: NamedSharding | None) -> jax.Array:
    n = emb.shape[0]
    emb = emb.reshape(n, -1).astype(jnp.float32)
    valid = jnp.asarray(valid, dtype=bool)
    norm = jnp.sqrt(jnp.sum(emb * emb, axis=1, keepdims=True))
    e = jnp.where(valid[:, None] & (norm > 0), emb / jnp.where(norm > 0, norm, 1.0), 0.0)
    rows = jnp.arange(n, dtype=jnp.int32)
    b = _pick_block(n // shards, block) if shards > 1 and rows_sharding is not None else 0
    if b:  # sharded: every device takes its own query rows against all keys
        spec = rows_sharding.spec[0]
        body = partial(_top_sims, k=k, block=b)
        best = jax.shard_map(body, mesh=rows_sharding.mesh, in_specs=(P(spec), P(spec), P(), P()),
                             out_specs=P(spec), check_vma=False)(e, rows, e, valid)
    else:
        b = _pick_block(n, block) or min(block, n)
        n_pad = -(-n // b) * b

        def pad(a: jax.Array) -> jax.Array:
            return jnp.pad(a, ((0, n_pad - n),) + ((0, 0),) * (a.ndim - 1))

        ep, vp = pad(e), pad(valid)
        best = _top_sims(ep, pad(rows), ep, vp, k, b)[:n]
    found = best > -jnp.inf
    count = jnp.sum(found, axis=1)
    total = jnp.sum(jnp.where(found, (1.0 + best) / 2.0, 0.0), axis=1)
    return jnp.where(valid & (count > 0), total / jnp.maximum(count, 1), 0.0)
