"""BADGE (Ash, Zhang, Krishnamurthy, Langford & Agarwal, ICLR 2020, "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds"): k-means++ seeding over the gradient embeddings of the last layer.

The gradient of the cross-entropy at the predicted label with respect to the last linear layer is
g = (p - onehot(argmax p)) (x) h, an outer product of a (C,) vector a and the penultimate features h (E,).
We never materialise the (N, C*E) embedding: |g_i - g_j|^2 = |a_i|^2 |h_i|^2 + |a_j|^2 |h_j|^2
- 2 (a_i . a_j)(h_i . h_j), so each seeding step costs O(N (C + E)). As in the release (JordanAsh/badge,
`init_centers`), the first pick is the row with the largest gradient norm; each next pick is drawn with
probability proportional to its squared distance to the nearest pick (Gumbel-max with a key per global row,
so the draw does not depend on sharding).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from boostmis_jax.acquisition.kmeans import gumbel_rows


def grad_factors(probs: jax.Array, emb: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a (N, C), h (N, E)) with the gradient embedding g_i = a_i (x) h_i."""
    probs = probs.astype(jnp.float32)
    onehot = jax.nn.one_hot(jnp.argmax(probs, axis=-1), probs.shape[-1], dtype=jnp.float32)
    return probs - onehot, emb.reshape(emb.shape[0], -1).astype(jnp.float32)


@partial(jax.jit, static_argnames=("budget",))
def badge_order(probs: jax.Array, emb: jax.Array, avail: jax.Array, key: jax.Array, *,
                budget: int) -> tuple[jax.Array, jax.Array]:
    """(order (budget,) int32 picks from `avail`, -1 once they run out; squared gradient norm (N,))."""
    a, h = grad_factors(probs, emb)
    sq_a, sq_h = jnp.sum(a * a, 1), jnp.sum(h * h, 1)
    norm2 = sq_a * sq_h
    avail = jnp.asarray(avail, bool)
    n = probs.shape[0]

    def dist_to(i):
        return jnp.maximum(norm2 + norm2[i] - 2.0 * (a @ a[i]) * (h @ h[i]), 0.0)

    def step(t, state):
        picks, mind, av = state
        w = jnp.where(av, mind, 0.0)
        logits = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
        g = logits + gumbel_rows(jax.random.fold_in(key, t), n)
        # first pick, or every remaining row coincides with a pick: the largest gradient norm left
        fallback = jnp.argmax(jnp.where(av, norm2, -1.0))
        i = jnp.where((t == 0) | ~jnp.any(w > 0), fallback, jnp.argmax(g)).astype(jnp.int32)
        ok = jnp.any(av)
        picks = picks.at[t].set(jnp.where(ok, i, -1))
        mind = jnp.where(ok, jnp.minimum(mind, dist_to(i)), mind)
        av = av.at[i].set(av[i] & ~ok)
        return picks, mind, av

    init = (jnp.full((budget,), -1, jnp.int32), jnp.full((n,), jnp.inf, jnp.float32), avail)
    picks, _, _ = jax.lax.fori_loop(0, budget, step, init)
    return picks, norm2


def badge_select(probs: jax.Array, emb: jax.Array, budget: int, *, key: jax.Array,
                 candidate_mask: jax.Array | None = None) -> jax.Array:
    """(budget,) row indices BADGE labels next from the model's probabilities (N, C) and penultimate
    features (N, E); -1 once the candidates run out."""
    avail = jnp.ones((probs.shape[0],), bool) if candidate_mask is None else jnp.asarray(candidate_mask, bool)
    return badge_order(jnp.asarray(probs), jnp.asarray(emb), avail, key, budget=int(budget))[0]
