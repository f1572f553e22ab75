"""Low-budget selectors on bare embeddings (TypiClust, ProbCover, BADGE) and k-means, against small
brute-force numpy references."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from boostmis_jax.acquisition.coverage import probcover_order, probcover_select, purity_radius
from boostmis_jax.acquisition.kmeans import kmeans, kmeans_pp, l2_normalize
from boostmis_jax.acquisition.typicality import typiclust_order, typiclust_select


def unit(a):
    a = np.asarray(a, np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def blobs(n_per=(30, 20, 12), d=6, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.eye(d)[: len(n_per)] * 3 + 0.3
    x = np.concatenate([c + spread * rng.normal(size=(m, d)) for c, m in zip(centers, n_per)])
    y = np.concatenate([np.full(m, i) for i, m in enumerate(n_per)])
    return x.astype(np.float32), y


# ---------------------------------------------------------------- k-means
def test_kmeans_matches_numpy_lloyd_from_the_same_seeds():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    mask = rng.random(80) > 0.2
    key = jax.random.key(3)
    seeds = np.asarray(kmeans_pp(jnp.asarray(x), jnp.asarray(mask), 5, key))
    assert len(set(seeds.tolist())) == 5 and mask[seeds].all()
    a, centers, live = kmeans(jnp.asarray(x), jnp.asarray(mask), 5, key, steps=10)
    c = x[seeds].astype(np.float64)
    xm = x.astype(np.float64)
    for _ in range(10):
        d = ((xm[:, None, :] - c[None]) ** 2).sum(-1)
        lab = d.argmin(1)
        for j in range(5):
            sel = mask & (lab == j)
            if sel.any():
                c[j] = xm[sel].mean(0)
    ref = ((xm[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    a = np.asarray(a)
    assert (a[~mask] == -1).all()
    np.testing.assert_array_equal(a[mask], ref[mask])
    np.testing.assert_allclose(np.asarray(centers), c, atol=1e-4)
    # fewer active clusters than the static count: the rest stay dead and unused
    a3, _, live3 = kmeans(jnp.asarray(x), jnp.asarray(mask), 5, key, jnp.int32(3))
    assert np.asarray(live3).sum() == 3 and set(np.asarray(a3)[mask].tolist()) <= set(np.flatnonzero(live3))


# ---------------------------------------------------------------- TypiClust
def np_typiclust(x, cluster, labeled, avail, budget, k=20, min_size=5):
    """The release's selection (typiclust.py) given the clusters, typicality computed once."""
    xn = unit(x)
    s = cluster.max() + 1
    size = np.bincount(cluster[cluster >= 0], minlength=s)
    existing = np.bincount(cluster[labeled], minlength=s)
    ids = [c for c in range(s) if size[c] > min_size] or [c for c in range(s) if size[c] > 0]
    ids = sorted(ids, key=lambda c: (existing[c], -size[c], c))
    members = ~labeled
    typ = np.zeros(len(x))
    for i in range(len(x)):
        same = np.flatnonzero(members & (cluster == cluster[i]))
        same = same[same != i]
        kc = min(k, int((members & (cluster == cluster[i])).sum()) // 2)
        if kc > 0:
            d = np.sort(np.linalg.norm(xn[same] - xn[i], axis=1))[:kc]
            typ[i] = 1 / (d.mean() + 1e-5)
    av, picks = avail.copy(), []
    for t in range(budget):
        c = ids[t % len(ids)]
        pool = av & (cluster == c)
        if not pool.any():
            pool = av
        i = int(np.argmax(np.where(pool, typ, -1)))
        picks.append(i)
        av[i] = False
    return picks, typ


@pytest.mark.parametrize("n_labeled,budget", [(0, 3), (4, 5), (0, 8)])
def test_typiclust_matches_numpy_reference(n_labeled, budget):
    x, _ = blobs(seed=n_labeled)
    n = len(x)
    rng = np.random.default_rng(1)
    labeled = np.zeros(n, bool)
    labeled[rng.choice(n, n_labeled, replace=False)] = True
    avail = ~labeled
    key = jax.random.key(7)
    picks, typ = typiclust_order(jnp.asarray(x), avail, labeled, np.ones(n, bool), key, budget=budget,
                                 max_clusters=32)
    s = min(32, n)
    cluster, _, _ = kmeans(l2_normalize(jnp.asarray(x)), jnp.ones(n, bool), s, key,
                           jnp.int32(min(n_labeled + budget, s)))
    ref, ref_typ = np_typiclust(x, np.asarray(cluster), labeled, avail, budget)
    np.testing.assert_allclose(np.asarray(typ), ref_typ, rtol=1e-3)
    assert np.asarray(picks).tolist() == ref


def test_typiclust_picks_one_typical_row_per_blob_and_exact_budget():
    x, y = blobs(n_per=(40, 25, 15), seed=3)
    got = np.asarray(typiclust_select(jnp.asarray(x), 3, key=jax.random.key(0)))
    assert sorted(y[got].tolist()) == [0, 1, 2]          # one per blob: a diverse batch
    xn = unit(x)
    for i in got:                                         # the picked row sits near its blob's centre
        blob = xn[y == y[i]]
        d = np.linalg.norm(blob - blob.mean(0), axis=1)
        assert np.linalg.norm(xn[i] - blob.mean(0)) <= np.quantile(d, 0.5)
    lab = np.zeros(len(x), bool)
    lab[y == 0] = True                                    # blob 0 covered: the next picks avoid it
    more = np.asarray(typiclust_select(jnp.asarray(x), 6, key=jax.random.key(0), labeled_mask=lab))
    assert len(set(more.tolist())) == 6 and not lab[more].any()
    few = np.asarray(typiclust_select(jnp.asarray(x[:4]), 6, key=jax.random.key(0)))
    assert sorted(few[:4].tolist()) == [0, 1, 2, 3] and (few[4:] == -1).all()


# ---------------------------------------------------------------- ProbCover
def np_probcover(x, labeled, avail, budget, delta):
    xn = unit(x)
    d = np.linalg.norm(xn[:, None] - xn[None], axis=-1)
    adj = d <= delta
    np.fill_diagonal(adj, True)
    covered = adj[:, labeled].any(1)
    degree = adj.sum(1)
    av, picks = avail.copy(), []
    for _ in range(budget):
        if not av.any():
            picks.append(-1)
            continue
        c = (adj & ~covered[None]).sum(1)
        score = c if np.where(av, c, -1).max() > 0 else degree
        i = int(np.argmax(np.where(av, score, -1)))
        picks.append(i)
        covered |= adj[i]
        av[i] = False
    return picks


@pytest.mark.parametrize("n_labeled", [0, 5])
def test_probcover_matches_numpy_greedy_cover(n_labeled):
    rng = np.random.default_rng(n_labeled)
    x = rng.normal(size=(70, 5)).astype(np.float32)
    labeled = np.zeros(70, bool)
    labeled[rng.choice(70, n_labeled, replace=False)] = True
    avail = ~labeled & (rng.random(70) > 0.1)
    delta = 0.9
    picks, first, dl = probcover_order(jnp.asarray(x), avail, labeled, np.ones(70, bool), jax.random.key(0),
                                       delta, budget=7)
    assert np.asarray(picks).tolist() == np_probcover(x, labeled, avail, 7, delta)
    assert float(dl) == pytest.approx(delta)


def test_probcover_purity_radius_is_the_quantile_of_other_cluster_distance():
    x, _ = blobs(n_per=(30, 30), seed=2, spread=0.3)
    n = len(x)
    key = jax.random.key(4)
    xn = l2_normalize(jnp.asarray(x))
    delta = float(purity_radius(xn, jnp.ones(n, bool), key, 2, 0.95))
    cluster = np.asarray(kmeans(xn, jnp.ones(n, bool), 2, key)[0])
    e = unit(x)
    d = np.linalg.norm(e[:, None] - e[None], axis=-1)
    d_other = np.where(cluster[:, None] != cluster[None], d, np.inf).min(1)
    assert delta == pytest.approx(np.sort(d_other)[int(np.floor(0.05 * n))], rel=1e-4)
    pure = np.mean([(cluster[d[i] <= delta * (1 - 1e-6)] == cluster[i]).all() for i in range(n)])
    assert pure >= 0.95
    picks = np.asarray(probcover_select(jnp.asarray(x), 2, clusters=2, key=key))
    assert len(set(cluster[picks].tolist())) == 2          # the two picks cover the two blobs
