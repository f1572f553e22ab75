"""k-means on device for the selectors that need clusters (TypiClust, ProbCover's purity radius, `al.batch =
cluster`): k-means++ seeding then a fixed number of Lloyd steps, all inside one jit.

Randomness comes from fold_in(fold_in(key, step), global row) (a Gumbel-max draw per row), so the seeds do
not depend on how the rows are sharded. The cluster count is static (`n_clusters`, the shape), the number
actually used may be smaller and traced (`active`), so a growing labeled set never recompiles.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

LLOYD_STEPS = 10


def l2_normalize(emb: jax.Array) -> jax.Array:
    """Rows scaled to unit L2 norm (all-zero rows stay zero): cosine geometry for every cluster/kNN here."""
    emb = emb.reshape(emb.shape[0], -1).astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(emb * emb, axis=1, keepdims=True))
    return emb / jnp.where(norm > 0, norm, 1.0)


def gumbel_rows(key: jax.Array, n: int) -> jax.Array:
    """(n,) standard Gumbel noise, row r from fold_in(key, r): the same under any sharding or chunking."""
    rows = jnp.arange(n, dtype=jnp.int32)
    return jax.vmap(lambda r: jax.random.gumbel(jax.random.fold_in(key, r), (), jnp.float32))(rows)


def sq_dists(x: jax.Array, c: jax.Array) -> jax.Array:
    """(N, K) squared Euclidean distances, clipped at 0."""
    d = jnp.sum(x * x, 1)[:, None] + jnp.sum(c * c, 1)[None, :] - 2.0 * (x @ c.T)
    return jnp.maximum(d, 0.0)


def kmeans_pp(x: jax.Array, mask: jax.Array, n_clusters: int, key: jax.Array,
              active: jax.Array | int | None = None) -> jax.Array:
    """(n_clusters,) row indices of k-means++ seeds drawn among `mask` rows (D^2 sampling; -1 past `active`
    or when the rows run out). The first seed is drawn uniformly."""
    n = x.shape[0]
    active = n_clusters if active is None else active
    big = jnp.finfo(jnp.float32).max

    def step(t, state):
        seeds, mind, avail = state
        w = jnp.where(t == 0, jnp.where(avail, 1.0, 0.0), jnp.where(avail, mind, 0.0))
        logits = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
        any_w = jnp.any(w > 0)
        # all remaining rows at distance 0 (duplicates): take the first available one
        logits = jnp.where(any_w, logits, jnp.where(avail, 0.0, -jnp.inf))
        g = logits + gumbel_rows(jax.random.fold_in(key, t), n)
        i = jnp.argmax(g).astype(jnp.int32)
        ok = jnp.any(avail) & (t < active)
        seeds = seeds.at[t].set(jnp.where(ok, i, -1))
        new = jnp.sum(jnp.square(x - x[i][None, :]), axis=1)
        mind = jnp.where(ok, jnp.minimum(mind, new), mind)
        avail = avail.at[i].set(jnp.where(ok, False, avail[i]))
        return seeds, mind, avail

    init = (jnp.full((n_clusters,), -1, jnp.int32), jnp.full((n,), big, jnp.float32), jnp.asarray(mask, bool))
    return jax.lax.fori_loop(0, n_clusters, step, init)[0]


@partial(jax.jit, static_argnames=("n_clusters", "steps"))
def kmeans(x: jax.Array, mask: jax.Array, n_clusters: int, key: jax.Array,
           active: jax.Array | int | None = None,
           steps: int = LLOYD_STEPS) -> tuple[jax.Array, jax.Array, jax.Array]:
    """k-means on the `mask` rows of `x` (N, E): (assignment (N,) int32 in [0, n_clusters), -1 off-mask;
    centers (n_clusters, E); live (n_clusters,) bool, the clusters in use). Lloyd steps keep a cluster that
    lost every row at its old center (it simply stays empty)."""
    x = x.reshape(x.shape[0], -1).astype(jnp.float32)
    mask = jnp.asarray(mask, bool)
    seeds = kmeans_pp(x, mask, n_clusters, key, active)
    live = seeds >= 0
    centers = jnp.where(live[:, None], x[jnp.maximum(seeds, 0)], 0.0)

    def assign(c):
        d = jnp.where(live[None, :], sq_dists(x, c), jnp.inf)
        return jnp.argmin(d, axis=1).astype(jnp.int32)

    def lloyd(_, c):
        a = jnp.where(mask, assign(c), n_clusters)
        sums = jax.ops.segment_sum(x, a, num_segments=n_clusters + 1)[:n_clusters]
        ones = jnp.ones_like(a, jnp.float32)
        counts = jax.ops.segment_sum(ones, a, num_segments=n_clusters + 1)[:n_clusters]
        return jnp.where((counts > 0)[:, None], sums / jnp.maximum(counts, 1.0)[:, None], c)

    centers = jax.lax.fori_loop(0, steps, lloyd, centers)
    a = jnp.where(mask & jnp.any(live), assign(centers), -1)
    return a, centers, live
