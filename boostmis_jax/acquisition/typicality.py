"""TypiClust (Hacohen, Dekel & Weinshall, ICML 2022, "Active Learning on a Budget"): at low budgets label
the most TYPICAL row of each not-yet-covered cluster of the embedding.

Our reading of the paper and its release (avihu111/TypiClust, `typiclust.py`):
* k-means over every pool row (labeled and unlabeled) into min(|L| + B, max_clusters) clusters;
* clusters of <= `min_cluster_size` rows are dropped; the rest are visited in order of fewest labeled rows,
  then largest size, round-robin when the budget exceeds them;
* in the visited cluster the unlabeled row of highest typicality wins, typicality(x) = 1 / (mean distance
  to its k nearest unlabeled rows of the same cluster + 1e-5), k = min(20, cluster's unlabeled // 2).
Deviations: distances are Euclidean on L2-normalised embeddings (cosine geometry, as everywhere in
acquisition/); typicality is computed once per round, not again after each pick in the round (a picked row
leaves the candidates but still counts as a neighbour); the cluster count is capped by a static
`max_clusters` (the release caps at 500 too) so a growing labeled set never recompiles.

Cost: k-means O(N * clusters * E) per Lloyd step and the within-cluster kNN O(N^2 * E) in blocks of
QUERY_BLOCK query rows (memory O(QUERY_BLOCK * N)): seconds at 10^4 rows on a CPU.

Pure and jitted: `typiclust_select(emb, budget, key=...)` works on a bare embedding, with no classifier
(the zero-label first round); the scorer's `typiclust` selector calls `typiclust_order` on the pool pass's
embeddings.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from boostmis_jax.acquisition.kmeans import kmeans, l2_normalize

K_NN = 20
MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5
QUERY_BLOCK = 128


def cluster_knn_dists(x: jax.Array, cluster: jax.Array, members: jax.Array, k: int,
                      block: int = QUERY_BLOCK) -> jax.Array:
    """(N, k) Euclidean distances (ascending) from each row to its k nearest `members` of its own cluster,
    self excluded; +inf where there are fewer. `x` L2-normalised; memory O(block * N)."""
    n = x.shape[0]
    nb = -(-n // block)
    pad = nb * block - n
    xq = jnp.pad(x, ((0, pad), (0, 0)))
    cq = jnp.pad(cluster, (0, pad), constant_values=-2)
    rows = jnp.arange(nb * block, dtype=jnp.int32)
    kk = min(k, n)

    def per_block(args):
        qb, qc, qr = args
        sim = qb @ x.T
        ok = members[None, :] & (cluster[None, :] == qc[:, None]) & (jnp.arange(n)[None, :] != qr[:, None])
        top, _ = jax.lax.top_k(jnp.where(ok, sim, -jnp.inf), kk)
        return jnp.where(top > -jnp.inf, jnp.sqrt(jnp.maximum(2.0 - 2.0 * top, 0.0)), jnp.inf)

    out = jax.lax.map(per_block, (xq.reshape(nb, block, -1), cq.reshape(nb, block), rows.reshape(nb, block)))
    out = out.reshape(nb * block, kk)[:n]
    if kk < k:
        out = jnp.pad(out, ((0, 0), (0, k - kk)), constant_values=jnp.inf)
    return out


def typicality(x: jax.Array, cluster: jax.Array, members: jax.Array, k: int = K_NN) -> jax.Array:
    """(N,) 1 / (mean distance to the k_c nearest members of the row's cluster + 1e-5), k_c = min(k, members
    of the cluster // 2); 0 where k_c is 0 or the row has no cluster."""
    n = x.shape[0]
    seg = jnp.where(cluster >= 0, cluster, n)  # cluster ids are < N
    n_c = jax.ops.segment_sum(members.astype(jnp.int32), seg, num_segments=n + 1)
    kc = jnp.minimum(k, n_c[seg] // 2)
    d = cluster_knn_dists(x, cluster, members, k)
    use = jnp.arange(k)[None, :] < kc[:, None]
    mean = jnp.sum(jnp.where(use & jnp.isfinite(d), d, 0.0), 1) / jnp.maximum(kc, 1)
    return jnp.where((kc > 0) & (cluster >= 0), 1.0 / (mean + 1e-5), 0.0)


@partial(jax.jit, static_argnames=("budget", "max_clusters", "k", "min_cluster_size"))
def typiclust_order(emb: jax.Array, avail: jax.Array, labeled: jax.Array, valid: jax.Array, key: jax.Array, *,
                    budget: int, max_clusters: int = MAX_CLUSTERS, k: int = K_NN,
                    min_cluster_size: int = MIN_CLUSTER_SIZE) -> tuple[jax.Array, jax.Array]:
    """(order (budget,) int32 row indices picked from `avail`, -1 once they run out; typicality (N,)).

    Clusters `valid` rows (labeled included) into min(|labeled| + budget, max_clusters) k-means clusters."""
    x = l2_normalize(emb)
    n = x.shape[0]
    valid, labeled = jnp.asarray(valid, bool), jnp.asarray(labeled, bool) & jnp.asarray(valid, bool)
    avail = jnp.asarray(avail, bool) & valid & ~labeled
    s = max(1, min(max_clusters, n))
    active = jnp.minimum(jnp.sum(labeled) + budget, s)
    cluster, _, live = kmeans(x, valid, s, key, active)
    seg = jnp.where(cluster >= 0, cluster, s)
    size = jax.ops.segment_sum(valid.astype(jnp.int32), seg, num_segments=s + 1)[:s]
    existing = jax.ops.segment_sum(labeled.astype(jnp.int32), seg, num_segments=s + 1)[:s]
    eligible = live & (size > min_cluster_size)
    eligible = jnp.where(jnp.any(eligible), eligible, live & (size > 0))
    sort_key = jnp.where(eligible, existing * (n + 1) - size, jnp.iinfo(jnp.int32).max)
    order_c = jnp.argsort(sort_key, stable=True).astype(jnp.int32)
    n_elig = jnp.maximum(jnp.sum(eligible), 1)
    typ = typicality(x, cluster, valid & ~labeled, k)

    def step(t, state):
        picks, av = state
        c = order_c[t % n_elig]
        in_c = av & (cluster == c)
        pool = jnp.where(jnp.any(in_c), in_c, av)  # the cluster ran dry: the most typical row anywhere
        i = jnp.argmax(jnp.where(pool, typ, -1.0)).astype(jnp.int32)
        ok = jnp.any(av)
        picks = picks.at[t].set(jnp.where(ok, i, -1))
        av = av.at[i].set(av[i] & ~ok)
        return picks, av

    picks, _ = jax.lax.fori_loop(0, budget, step, (jnp.full((budget,), -1, jnp.int32), avail))
    return picks, typ


def typiclust_select(emb: jax.Array, budget: int, *, key: jax.Array, labeled_mask: jax.Array | None = None,
                     candidate_mask: jax.Array | None = None, max_clusters: int = MAX_CLUSTERS,
                     k: int = K_NN, min_cluster_size: int = MIN_CLUSTER_SIZE) -> jax.Array:
    """(budget,) row indices of `emb` (N, E) that TypiClust labels next (-1 once the candidates run out).

    Works on any embedding, no classifier needed. `labeled_mask` (N,) bool: rows already labeled (they
    count for coverage, never picked); `candidate_mask`: rows that may be picked (default: all unlabeled)."""
    n = emb.shape[0]
    labeled = jnp.zeros((n,), bool) if labeled_mask is None else jnp.asarray(labeled_mask, bool)
    avail = ~labeled if candidate_mask is None else jnp.asarray(candidate_mask, bool) & ~labeled
    order, _ = typiclust_order(jnp.asarray(emb), avail, labeled, jnp.ones((n,), bool), key,
                               budget=int(budget), max_clusters=int(max_clusters), k=int(k),
                               min_cluster_size=int(min_cluster_size))
    return order
