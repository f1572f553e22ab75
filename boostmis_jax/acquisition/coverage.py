"""ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022, "Active Learning Through a Covering
Lens"): label the rows whose delta-balls cover the most not-yet-covered rows of the embedding.

Our reading of the paper and its release (avihu111/TypiClust, `probcover.py`):
* graph: an edge i -> j when |x_i - x_j| <= delta (self included), on L2-normalised embeddings;
* rows inside a labeled row's ball start covered; each pick is the row whose ball holds the most uncovered
  rows, after which its ball is covered; once everything is covered the release picks at random, we pick
  the row with the largest ball (deterministic);
* delta from purity: k-means the embedding into as many clusters as classes; a ball is pure when it holds
  one cluster only; delta is the largest radius at which a share `purity` (alpha = 0.95, the paper's) of the
  balls are pure. A ball around row i is pure exactly when delta < d_other(i), the distance to the nearest
  row of another cluster, so delta is the (1 - alpha) quantile of d_other: one blocked pass, no grid.
Memory: the ball graph is materialised as an (N, N) bool matrix (25 MB at PneumoniaMNIST's 5k rows, 10 GB
at 100k): fine on an accelerator for pools up to a few 10^4 rows.

Pure and jitted: `probcover_select(emb, budget)` works on a bare embedding, with no classifier.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from boostmis_jax.acquisition.kmeans import kmeans, l2_normalize

PURITY = 0.95
QUERY_BLOCK = 256


def other_cluster_dist(x: jax.Array, cluster: jax.Array, valid: jax.Array,
                       block: int = QUERY_BLOCK) -> jax.Array:
    """(N,) Euclidean distance from each row to the nearest valid row of a different cluster (+inf if none);
    `x` L2-normalised."""
    n = x.shape[0]
    nb = -(-n // block)
    pad = nb * block - n
    xq = jnp.pad(x, ((0, pad), (0, 0))).reshape(nb, block, -1)
    cq = jnp.pad(cluster, (0, pad), constant_values=-2).reshape(nb, block)

    def per_block(args):
        qb, qc = args
        sim = jnp.where(valid[None, :] & (cluster[None, :] != qc[:, None]), qb @ x.T, -jnp.inf)
        best = jnp.max(sim, axis=1)
        return jnp.where(best > -jnp.inf, jnp.sqrt(jnp.maximum(2.0 - 2.0 * best, 0.0)), jnp.inf)

    return jax.lax.map(per_block, (xq, cq)).reshape(-1)[:n]


def purity_radius(x: jax.Array, valid: jax.Array, key: jax.Array, clusters: int,
                  purity: float = PURITY) -> jax.Array:
    """The largest delta at which a share `purity` of the valid rows' delta-balls hold one k-means cluster
    (`clusters` clusters) only; `x` L2-normalised. Scalar float32."""
    cluster, _, _ = kmeans(x, valid, clusters, key)
    d = jnp.where(valid, other_cluster_dist(x, cluster, valid), jnp.inf)
    n_valid = jnp.sum(valid)
    q = jnp.floor((1.0 - purity) * n_valid).astype(jnp.int32)
    srt = jnp.sort(d)
    delta = srt[jnp.clip(q, 0, x.shape[0] - 1)]
    return jnp.where(jnp.isfinite(delta), delta, 2.0)  # a single cluster: every ball is pure


@partial(jax.jit, static_argnames=("budget", "clusters", "purity"))
def probcover_order(emb: jax.Array, avail: jax.Array, labeled: jax.Array, valid: jax.Array, key: jax.Array,
                    radius: jax.Array | float | None = None, *, budget: int, clusters: int = 2,
                    purity: float = PURITY) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(order (budget,) int32 picks from `avail`, -1 once they run out; the uncovered rows each row's ball
    held before the round (N,); delta). `radius` None: delta from purity (see module doc)."""
    x = l2_normalize(emb)
    valid = jnp.asarray(valid, bool)
    labeled = jnp.asarray(labeled, bool) & valid
    avail = jnp.asarray(avail, bool) & valid & ~labeled
    delta = purity_radius(x, valid, key, clusters, purity) if radius is None else jnp.float32(radius)
    thr = 1.0 - 0.5 * delta * delta  # |a - b| <= delta  <=>  a.b >= 1 - delta^2 / 2 on the unit sphere
    adj = (x @ x.T >= thr) & valid[:, None] & valid[None, :]
    adj = adj | (jnp.eye(x.shape[0], dtype=bool) & valid[:, None])
    covered = jnp.any(adj & labeled[None, :], axis=1)
    degree = jnp.sum(adj, axis=1)

    def counts(cov):
        return jnp.sum(adj & ~cov[None, :], axis=1)

    first = counts(covered)

    def step(t, state):
        picks, cov, av = state
        c = counts(cov)
        best = jnp.max(jnp.where(av, c, -1))
        score = jnp.where(best > 0, c, degree)  # all covered: the largest ball
        i = jnp.argmax(jnp.where(av, score, -1)).astype(jnp.int32)
        ok = jnp.any(av)
        picks = picks.at[t].set(jnp.where(ok, i, -1))
        cov = jnp.where(ok, cov | adj[i], cov)
        av = av.at[i].set(av[i] & ~ok)
        return picks, cov, av

    picks, _, _ = jax.lax.fori_loop(0, budget, step, (jnp.full((budget,), -1, jnp.int32), covered, avail))
    return picks, first, delta


def probcover_select(emb: jax.Array, budget: int, *, radius: float | None = None,
                     labeled_mask: jax.Array | None = None, candidate_mask: jax.Array | None = None,
                     key: jax.Array | None = None, clusters: int = 2, purity: float = PURITY) -> jax.Array:
    """(budget,) row indices of `emb` (N, E) that ProbCover labels next (-1 once the candidates run out).

    Works on any embedding, no classifier needed. `radius` None: chosen from purity with `clusters` k-means
    clusters (use the number of classes); `key` seeds that k-means (default key 0)."""
    n = emb.shape[0]
    labeled = jnp.zeros((n,), bool) if labeled_mask is None else jnp.asarray(labeled_mask, bool)
    avail = ~labeled if candidate_mask is None else jnp.asarray(candidate_mask, bool) & ~labeled
    key = jax.random.key(0) if key is None else key
    return probcover_order(jnp.asarray(emb), avail, labeled, jnp.ones((n,), bool), key, radius,
                           budget=int(budget), clusters=int(clusters), purity=float(purity))[0]
