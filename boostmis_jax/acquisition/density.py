"""Local density of each pool row from its k nearest valid neighbours (cosine similarity), two readings:

* `degree` (the BoostMIS release, the default): the node degree in the k-NN graph over the pool, symmetrised
  and binarised (i~j when either is among the other's k nearest), divided by 2k. A row in a dense cluster
  is many rows' neighbour (degree above k, a hub can pass 2k); an isolated row only has its own k (0.5).
* `cosine`: the mean of (1+s)/2 over the k most similar rows. Nearly constant on real pools (a coefficient of
  variation of 1-3%), so it barely reorders entropy; kept as an option.

Blocked so memory stays O(block^2 + N*k) at any pool size: query blocks (lax.map) against key blocks
(lax.scan), merging a running top-k. The per-block top-k is the expensive non-matmul part on CPU, so it is
cut down with a group-max prefilter (see `_block_topk`). With the pool sharded along N, each device scores its
own query rows against all (gathered) keys inside shard_map: GSPMD cannot partition the TopK custom call and
would otherwise replicate every top-k on every device.

Precision (`precision`): the similarity matmul is the N^2 part. With "bfloat16" it runs on bf16 operands
(fp32 accumulation) to SHORTLIST `shortlist` > k candidates per row, which are then rescored exactly in fp32
(a gather of the shortlisted rows, HIGHEST precision) before the final top-k: the result equals the fp32
path's whenever every true top-k neighbour is among the bf16 top-`shortlist`. bf16 rounding moves a cosine
similarity of unit vectors by at most ~2^-7, so a miss needs `shortlist` - k rows within that of the k-th
neighbour (ties, near-duplicates: then rows of equal similarity up to 2^-7 may be swapped). "auto" (the
default) is bfloat16 on an accelerator, float32 on CPU (bf16 matmuls gain nothing there; results unchanged).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from boostmis_jax.acquisition.layout import infer_shards, row_sharding

GROUP = 16  # the top-k prefilter's group size (0: plain top-k; benchmarks set it for A/B runs)
PRECISIONS = ("auto", "float32", "bfloat16")
PRECISION = "auto"  # what `precision=None` means; benchmarks set it for A/B runs


def resolve_precision(precision: str | None) -> str:
    """'auto' -> 'bfloat16' on an accelerator backend, 'float32' on CPU."""
    precision = PRECISION if precision is None else precision
    if precision not in PRECISIONS:
        raise ValueError(f"knn precision {precision!r}: choose one of {PRECISIONS}")
    if precision == "auto":
        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    return precision


def _block_topk(sim: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Top-k values and their column indices per row of a (Q, B) block.

    Exact: split each row into groups of GROUP; the k largest entries lie in the k groups with the largest
    maxima (a group holding a top-k entry has at most k-1 groups with a larger max), so one cheap max pass
    plus top-k over B/GROUP maxima and over k*GROUP gathered values replaces a top-k over all B values.
    """
    q, b = sim.shape
    if not GROUP or b % GROUP != 0 or b // GROUP <= k:
        return jax.lax.top_k(sim, min(k, b))
    groups = sim.reshape(q, b // GROUP, GROUP)
    _, gi = jax.lax.top_k(jnp.max(groups, axis=-1), k)
    picked = jnp.take_along_axis(groups, gi[:, :, None], axis=1).reshape(q, k * GROUP)
    cols = (gi[:, :, None] * GROUP + jnp.arange(GROUP, dtype=gi.dtype)).reshape(q, k * GROUP)
    vals, j = jax.lax.top_k(picked, k)
    return vals, jnp.take_along_axis(cols, j, axis=1)


def _pick_block(rows: int, block: int, pad_ok: bool = False) -> int:
    """Largest block <= `block` dividing `rows` (no padding needed), or 0 when only tiny ones do.

    Blocks the top-k prefilter can split into groups come first. With `pad_ok` (the caller pads the rows to
    a multiple of `block` on 0): 0 also when no such block of at least 3/4 `block` divides and padding
    adds at most 5% rows -- a large pool then runs full-size prefiltered blocks (a 1M pool padded to the
    scorer's chunk has no useful divisor)."""
    top = min(block, rows)
    lo = max(top // 4, 1)
    if GROUP:
        for b in range(top - top % GROUP, max(lo, 3 * top // 4 if pad_ok else lo) - 1, -GROUP):
            if b > 0 and rows % b == 0:
                return b
        if pad_ok and top % GROUP == 0 and (-rows) % top <= 0.05 * rows:
            return 0
    for b in range(top, lo - 1, -1):
        if rows % b == 0:
            return b
    return 0


def _top_sims(q: jax.Array, qrows: jax.Array, keys: jax.Array, key_ok: jax.Array, k: int,
              block: int, precision: str = "float32", shortlist: int = 0) -> tuple[jax.Array, jax.Array]:
    """(nq, k) largest similarities of each query to valid keys other than itself (-inf where none), and
    the keys' row indices (meaningless where the similarity is -inf).

    nq and the key count must be multiples of `block`. `precision` 'bfloat16': shortlist by bf16
    similarities, rescore in fp32 (module docstring); `shortlist` candidates per row (0: 2k)."""
    nk = keys.shape[0]
    low = precision == "bfloat16"
    kb_all = keys.reshape(nk // block, block, keys.shape[1])
    if low:
        kb_all = kb_all.astype(jnp.bfloat16)
    ok_all = key_ok.reshape(nk // block, block)
    starts = jnp.arange(0, nk, block, dtype=jnp.int32)
    kk = min(k, nk)
    kl = min(max(shortlist or 2 * k, k), nk) if low else kk  # candidates kept while scanning the keys

    def per_query_block(args: tuple) -> jax.Array:
        qb, qr = args
        qm = qb.astype(jnp.bfloat16) if low else qb

        def merge(carry: tuple, key_args: tuple) -> tuple[tuple, None]:
            best, best_i = carry
            kb, ok, start = key_args
            sim = jnp.clip(jnp.matmul(qm, kb.T, preferred_element_type=jnp.float32), -1.0, 1.0)
            ok = ok[None, :] & ((start + jnp.arange(block, dtype=jnp.int32))[None, :] != qr[:, None])
            vals, cols = _block_topk(jnp.where(ok, sim, -jnp.inf), kl)
            both = jnp.concatenate([best, vals], axis=1)
            both_i = jnp.concatenate([best_i, start + cols.astype(jnp.int32)], axis=1)
            top, j = jax.lax.top_k(both, kl)
            return (top, jnp.take_along_axis(both_i, j, axis=1)), None

        init = (jnp.full((qb.shape[0], kl), -jnp.inf, jnp.float32), jnp.zeros((qb.shape[0], kl), jnp.int32))
        (best, best_i), _ = jax.lax.scan(merge, init, (kb_all, ok_all, starts))
        if not low:
            return best, best_i
        # exact fp32 similarities of the shortlist: (Q, kl, E) gathered rows, bounded by the block
        exact = jnp.einsum("qe,qle->ql", qb, jnp.take(keys, best_i, axis=0),
                           precision=jax.lax.Precision.HIGHEST)
        exact = jnp.where(best > -jnp.inf, jnp.clip(exact, -1.0, 1.0), -jnp.inf)
        top, j = jax.lax.top_k(exact, kk)
        return top, jnp.take_along_axis(best_i, j, axis=1)

    nq = q.shape[0]
    steps = (q.reshape(nq // block, block, q.shape[1]), qrows.reshape(nq // block, block))
    best, idx = jax.lax.map(per_query_block, steps)
    return best.reshape(nq, kk), idx.reshape(nq, kk)


def knn_density(emb: jax.Array, valid: jax.Array, *, k: int, block: int, kind: str = "cosine",
                shards: int | None = None, rows_sharding: NamedSharding | None = None,
                precision: str | None = None, shortlist: int = 0) -> jax.Array:
    """(N,) density >= 0 over the VALID rows (self excluded), `kind` 'degree' or 'cosine' (see above).

    Rows with fewer than k valid neighbours use those they have; invalid rows (and rows with no neighbour)
    get 0 and are never anyone's neighbour. Jitted; callable inside other jits (pass `shards` and
    `rows_sharding` there, see layout.py). `precision` / `shortlist`: the similarity matmul's (above).
    """
    if shards is None:
        shards = infer_shards(emb, 1)
        rows_sharding = row_sharding(emb, shards)
    return _knn_density(emb, valid, k=k, block=block, kind=kind, shards=shards, rows_sharding=rows_sharding,
                        precision=resolve_precision(precision), shortlist=int(shortlist))


def knn_neighbours(emb: jax.Array, valid: jax.Array, *, k: int, block: int, precision: str | None = None,
                   shortlist: int = 0) -> tuple[jax.Array, jax.Array]:
    """(N, k) cosine similarities and row indices of each valid row's k nearest valid rows (self excluded;
    -inf where none): the kernel `knn_density` reduces, exposed for tests and benchmarks (one device)."""
    return _neighbours(emb, valid, k=k, block=block, precision=resolve_precision(precision),
                       shortlist=int(shortlist))


def _normalized(emb: jax.Array, valid: jax.Array) -> jax.Array:
    n = emb.shape[0]
    emb = emb.reshape(n, -1).astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(emb * emb, axis=1, keepdims=True))
    return jnp.where(valid[:, None] & (norm > 0), emb / jnp.where(norm > 0, norm, 1.0), 0.0)


def _padded_top_sims(e: jax.Array, valid: jax.Array, k: int, block: int, precision: str,
                     shortlist: int) -> tuple[jax.Array, jax.Array]:
    """`_top_sims` of every row against every row on one device, padding N to a multiple of the block."""
    n = e.shape[0]
    b = _pick_block(n, block, pad_ok=True) or min(block, n)
    n_pad = -(-n // b) * b

    def pad(a: jax.Array) -> jax.Array:
        return jnp.pad(a, ((0, n_pad - n),) + ((0, 0),) * (a.ndim - 1))

    ep, vp = pad(e), pad(valid)
    best, idx = _top_sims(ep, pad(jnp.arange(n, dtype=jnp.int32)), ep, vp, k, b, precision, shortlist)
    return best[:n], idx[:n]


@partial(jax.jit, static_argnames=("k", "block", "precision", "shortlist"))
def _neighbours(emb: jax.Array, valid: jax.Array, *, k: int, block: int, precision: str,
                shortlist: int) -> tuple[jax.Array, jax.Array]:
    valid = jnp.asarray(valid, dtype=bool)
    return _padded_top_sims(_normalized(emb, valid), valid, k, block, precision, shortlist)


def _degree(best: jax.Array, idx: jax.Array, valid: jax.Array, k: int) -> jax.Array:
    """Degree in the symmetrised, binarised k-NN graph: |out(i)| + |in(i)| - |mutual(i)|, over 2k."""
    n = valid.shape[0]
    found = (best > -jnp.inf) & valid[:, None]  # invalid rows are nobody's neighbour and have none
    safe = jnp.where(found, idx, n)
    out_deg = jnp.sum(found, axis=1)
    in_deg = jnp.zeros((n,), jnp.int32).at[safe.reshape(-1)].add(1, mode="drop")
    rows = jnp.arange(n, dtype=jnp.int32)
    nbr_lists = jnp.where(found[:, :, None], idx[jnp.clip(safe, 0, n - 1)], -1)  # (N, k, k)
    nbr_found = found[jnp.clip(safe, 0, n - 1)] & found[:, :, None]
    mutual = jnp.sum(jnp.any((nbr_lists == rows[:, None, None]) & nbr_found, axis=2), axis=1)
    deg = (out_deg + in_deg - mutual).astype(jnp.float32)
    return jnp.where(valid & (out_deg > 0), deg / (2.0 * k), 0.0)


@partial(jax.jit, static_argnames=("k", "block", "kind", "shards", "rows_sharding", "precision", "shortlist"))
def _knn_density(emb: jax.Array, valid: jax.Array, *, k: int, block: int, kind: str, shards: int,
                 rows_sharding: NamedSharding | None, precision: str = "float32",
                 shortlist: int = 0) -> jax.Array:
    n = emb.shape[0]
    valid = jnp.asarray(valid, dtype=bool)
    e = _normalized(emb, valid)
    rows = jnp.arange(n, dtype=jnp.int32)
    b = _pick_block(n // shards, block) if shards > 1 and rows_sharding is not None else 0
    if b:  # sharded: every device takes its own query rows against all keys
        spec = rows_sharding.spec[0]
        body = partial(_top_sims, k=k, block=b, precision=precision, shortlist=shortlist)
        best, idx = jax.shard_map(body, mesh=rows_sharding.mesh, in_specs=(P(spec), P(spec), P(), P()),
                                  out_specs=(P(spec), P(spec)), check_vma=False)(e, rows, e, valid)
    else:
        best, idx = _padded_top_sims(e, valid, k, block, precision, shortlist)
    if kind == "degree":
        return _degree(best, idx, valid, min(k, n))
    found = best > -jnp.inf
    count = jnp.sum(found, axis=1)
    total = jnp.sum(jnp.where(found, (1.0 + best) / 2.0, 0.0), axis=1)
    return jnp.where(valid & (count > 0), total / jnp.maximum(count, 1), 0.0)
