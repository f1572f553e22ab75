"""Core-set (greedy k-center) selection on embeddings, fully on device.

Memory stays O(N*E + block^2): the initial distance to the labeled centers is blocked (query blocks against a
compacted list of center blocks, so the cost is O(N * n_labeled * E), not O(N^2 * E)), and each greedy step
updates one running min-distance vector with the new center (O(N*E)).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

CENTER_BLOCK = 256


def min_dist_to_centers(emb: jax.Array, centers_mask: jax.Array, *, block: int = CENTER_BLOCK) -> jax.Array:
    """(N,) squared distance from each row to its nearest center (+inf when there is no center)."""
    n = emb.shape[0]
    nb = -(-n // block)
    order = jnp.argsort(~centers_mask, stable=True).astype(jnp.int32)  # centers first
    order = jnp.pad(order, (0, nb * block - n))
    n_centers = jnp.sum(centers_mask.astype(jnp.int32))
    sq = jnp.sum(emb * emb, axis=1)

    def cond(state: tuple) -> jax.Array:
        return state[0] * block < n_centers

    def body(state: tuple) -> tuple:
        b, mind = state
        idx = jax.lax.dynamic_slice(order, (b * block,), (block,))
        ok = (b * block + jnp.arange(block)) < n_centers
        cb = emb[idx]
        d = sq[:, None] + jnp.sum(cb * cb, axis=1)[None, :] - 2.0 * (emb @ cb.T)
        d = jnp.where(ok[None, :], jnp.maximum(d, 0.0), jnp.inf)
        return b + 1, jnp.minimum(mind, jnp.min(d, axis=1))

    _, mind = jax.lax.while_loop(cond, body, (jnp.int32(0), jnp.full((n,), jnp.inf, jnp.float32)))
    return mind


@partial(jax.jit, static_argnames=("budget",))
def coreset_greedy(emb: jax.Array, candidate: jax.Array, centers_mask: jax.Array,
                   budget: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Greedy k-center. Returns (idx (budget,) with -1 once candidates run out, the squared min-distance of
    each pick at the time it was picked, the final running min-distance (N,))."""
    emb = emb.reshape(emb.shape[0], -1).astype(jnp.float32)
    candidate = jnp.asarray(candidate, bool) & ~jnp.asarray(centers_mask, bool)
    mind = min_dist_to_centers(emb, jnp.asarray(centers_mask, bool))

    def step(t: jax.Array, state: tuple) -> tuple:
        idx, dist, mind, avail = state
        score = jnp.where(avail, mind, -jnp.inf)
        i = jnp.argmax(score).astype(jnp.int32)
        s = score[i]
        ok = s > -jnp.inf
        idx = idx.at[t].set(jnp.where(ok, i, -1))
        dist = dist.at[t].set(jnp.where(ok, s, -jnp.inf))
        c = emb[i]
        new = jnp.sum(jnp.square(emb - c[None, :]), axis=1)
        mind = jnp.where(ok, jnp.minimum(mind, new), mind)
        avail = avail.at[i].set(False)
        return idx, dist, mind, avail

    init = (jnp.full((budget,), -1, jnp.int32), jnp.full((budget,), -jnp.inf, jnp.float32), mind, candidate)
    idx, dist, mind, _ = jax.lax.fori_loop(0, budget, step, init)
    return idx, dist, mind


def coreset_select(emb: jax.Array, candidate: jax.Array, centers_mask: jax.Array, budget: int) -> jax.Array:
    """(budget,) row indices picked by greedy k-center from the labeled centers (-1 past the candidates).

    Each pick is the candidate farthest (Euclidean on `emb`) from all centers and earlier picks; with no
    labeled centers the first pick is the lowest-index candidate.
    """
    return coreset_greedy(emb, candidate, centers_mask, int(budget))[0]
