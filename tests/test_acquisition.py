"""Acquisition: VAT direction/score, kNN density, balanced picks, coreset, union/dedup, sharding, caching."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from boostmis_jax.acquisition import (
    SELECTORS,
    acquire,
    coreset_select,
    knn_density,
    make_scorer,
    select,
)
from boostmis_jax.acquisition.layout import infer_shards
from boostmis_jax.acquisition.vat import VatParams, forward_and_vat, normalize_per_sample, per_row_normal
from boostmis_jax.defaults import get_config
from boostmis_jax.errors import UserError

ALL = ("aus", "bus", "random", "entropy", "margin", "least_confidence", "coreset")
AL = get_config().al


def scorer(apply_fn, selectors, budget=10, **over):
    """A scorer with the config defaults, every unlabeled row a candidate unless `candidates` is given."""
    kw = {"chunk": AL.chunk, "knn_k": AL.knn_k, "knn_block": AL.knn_block, "vat_xi": AL.vat_xi,
          "vat_eps": AL.vat_eps, "vat_ip": AL.vat_ip, "density": AL.density, "candidates": "all", **over}
    return make_scorer(apply_fn, selectors=selectors, budget=budget, **kw)


def vat_scores(apply_fn, v, x, valid, key, *, xi, eps, ip, chunk):
    out = scorer(apply_fn, ("aus",), chunk=chunk, vat_xi=xi, vat_eps=eps, vat_ip=ip)(
        v, x, valid, np.zeros(x.shape[0], bool), key)
    return out["scores"]["aus"]


# ---------------------------------------------------------------- tiny models (numpy twins in float64)
def linear_apply(w, x):
    return x @ w, x


def mlp_apply(v, x):
    h = jnp.tanh(x @ v["w1"] + v["b1"])
    return h @ v["w2"], h


def np_mlp_logits(v, x):
    h = np.tanh(x @ np.asarray(v["w1"], np.float64) + np.asarray(v["b1"], np.float64))
    return h @ np.asarray(v["w2"], np.float64)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_kl(lp, lq):
    a, b = np_log_softmax(lp), np_log_softmax(lq)
    return float(np.sum(np.exp(a) * (a - b)))


def make_mlp(key, d_in=6, hidden=8, classes=3):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"w1": jax.random.normal(k1, (d_in, hidden)), "b1": 0.1 * jax.random.normal(k2, (hidden,)),
            "w2": jax.random.normal(k3, (hidden, classes))}


def numerical_kl_hessian(f, x, h=1e-4):
    """Hessian of r -> KL(p(x) || p(x + r)) at r = 0 by central differences (float64)."""
    d = x.size
    base = f(x)

    def kl(r):
        return np_kl(base, f(x + r))

    e = np.eye(d) * h
    hess = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            num = kl(e[i] + e[j]) - kl(e[i] - e[j]) - kl(-e[i] + e[j]) + kl(-e[i] - e[j])
            hess[i, j] = num / (4 * h * h)
    return hess


fav = jax.jit(forward_and_vat, static_argnums=(0, 5))


def cos(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# ---------------------------------------------------------------- VAT
def test_vat_direction_is_top_eigenvector_of_kl_hessian():
    """Binary linear softmax: the KL Hessian has rank one, so one power iteration hits its top eigenvector."""
    w = jax.random.normal(jax.random.key(0), (6, 2))
    x = np.asarray(jax.random.normal(jax.random.key(1), (4, 6)), np.float64)
    _, _, d_adv, _ = fav(linear_apply, w, jnp.asarray(x, jnp.float32), jnp.arange(4),
                                     jax.random.key(2), VatParams(xi=1e-6, eps=1.0, ip=1))
    wn = np.asarray(w, np.float64)
    for i in range(4):
        hess = numerical_kl_hessian(lambda z: z @ wn, x[i])
        top = np.linalg.eigh(hess)[1][:, -1]
        assert abs(cos(d_adv[i], top)) > 0.99


@pytest.mark.parametrize("xi", [1e-6, 0.05])
def test_vat_direction_matches_finite_differences(xi):
    """Nonlinear 3-class model. Exact path (tiny xi): d_adv ~ H d0 with H from finite differences.
    Finite-difference path (xi >= 1e-3): d_adv ~ numerical grad_d KL(p(x) || p(x + xi d)) at d0."""
    v = make_mlp(jax.random.key(3))
    x = np.asarray(jax.random.normal(jax.random.key(4), (3, 6)), np.float64)
    key, rows = jax.random.key(5), jnp.arange(3)
    d0 = np.asarray(normalize_per_sample(per_row_normal(key, rows, (6,))), np.float64)
    _, _, d_adv, _ = fav(mlp_apply, v, jnp.asarray(x, jnp.float32), rows, key,
                                     VatParams(xi=xi, eps=1.0, ip=1))

    def f(z):
        return np_mlp_logits(v, z)

    for i in range(3):
        if xi < 1e-3:
            ref = numerical_kl_hessian(f, x[i]) @ d0[i]
        else:
            xi_row = x[i]

            def kl(d, x0=xi_row):
                return np_kl(f(x0), f(x0 + xi * d))

            e = np.eye(6) * 1e-5
            ref = np.array([(kl(d0[i] + e[j]) - kl(d0[i] - e[j])) / 2e-5 for j in range(6)])
        assert cos(d_adv[i], ref) > 0.99


def test_vat_scores_beat_random_directions_and_ignore_chunking():
    v = make_mlp(jax.random.key(6))
    x = jax.random.normal(jax.random.key(7), (16, 6))
    valid = jnp.arange(16) < 15
    eps = 0.01  # small radius: KL ~ eps^2/2 d'Hd, maximized by the top eigenvector that power iteration finds
    kw = {"xi": 1e-6, "eps": eps, "ip": 4}
    score = np.asarray(vat_scores(mlp_apply, v, x, valid, jax.random.key(8), chunk=8, **kw))
    # per-sample RNG from fold_in(key, row): another chunking gives the same numbers; invalid rows score 0
    other = np.asarray(vat_scores(mlp_apply, v, x, valid, jax.random.key(8), chunk=16, **kw))
    np.testing.assert_allclose(score, other, rtol=1e-5, atol=1e-8)
    assert score[15] == -np.inf and np.all(score[:15] > 0)

    @jax.jit
    def random_kl(dirs):
        lp = jax.nn.log_softmax(mlp_apply(v, x)[0])

        def kl(d):
            return jnp.sum(jnp.exp(lp) * (lp - jax.nn.log_softmax(mlp_apply(v, x + eps * d)[0])), -1)

        return jax.vmap(kl)(dirs)

    dirs = jax.random.normal(jax.random.key(9), (50, 16, 6))
    rand_kl = np.asarray(random_kl(dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)))[:, :15]
    assert np.all(score[:15] >= rand_kl.max(0) * 0.99)
    assert np.all(score[:15] > 2 * rand_kl.mean(0))


def test_vat_score_zero_for_constant_model():
    def const(v, x):
        return jnp.broadcast_to(v, (x.shape[0], 3)), jnp.zeros((x.shape[0], 2))

    s = vat_scores(const, jnp.array([0.3, -1.0, 2.0]), jnp.ones((16, 4, 4, 1)), jnp.ones(16, bool),
                   jax.random.key(0), xi=1e-6, eps=2.0, ip=2, chunk=8)
    assert np.array_equal(np.asarray(s), np.zeros(16, np.float32))


def test_pool_outputs_match_direct_forward():
    v = make_mlp(jax.random.key(12))
    x = jax.random.normal(jax.random.key(13), (24, 6))
    valid = jnp.arange(24) < 20
    out = scorer(mlp_apply, ("entropy",), chunk=8)(v, x, valid, np.zeros(24, bool), jax.random.key(0))
    logits, emb = mlp_apply(v, x)
    p = np.asarray(jax.nn.softmax(logits[:20]))
    np.testing.assert_allclose(out["probs"][:20], p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["emb"][:20], emb[:20], rtol=1e-5, atol=1e-6)
    ent = np.asarray(out["scores"]["entropy"])
    np.testing.assert_allclose(ent[:20], -(p * np.log(p)).sum(1), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(out["emb"])[20:] == 0) and np.all(ent[20:] == -np.inf)
    with pytest.raises(UserError, match="al.chunk"):
        scorer(mlp_apply, ("entropy",), chunk=5)(v, x, valid, np.zeros(24, bool), jax.random.key(0))


# ---------------------------------------------------------------- kNN density
def brute_density(emb, valid, k):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = e @ e.T
    out = np.zeros(len(emb))
    for i in np.flatnonzero(valid):
        others = [j for j in np.flatnonzero(valid) if j != i]
        if others:
            out[i] = np.mean((1 + np.sort(sim[i, others])[::-1][:k]) / 2)
    return out


@pytest.mark.parametrize("n,block,k", [(96, 16, 4), (97, 16, 3), (96, 96, 20), (40, 8, 7)])
def test_knn_density_matches_brute_force(n, block, k):
    rng = np.random.default_rng(n + block)
    emb = rng.normal(size=(n, 5)).astype(np.float32)
    valid = rng.random(n) > 0.25
    got = np.asarray(knn_density(jnp.asarray(emb), jnp.asarray(valid), k=k, block=block))
    np.testing.assert_allclose(got, brute_density(emb.astype(np.float64), valid, k), atol=1e-5)
    assert np.all(got[~valid] == 0)


def test_knn_density_with_fewer_neighbours_than_k():
    emb = np.eye(8, 4, dtype=np.float32) + 0.1
    valid = np.zeros(8, bool)
    valid[[0, 1, 2]] = True
    got = np.asarray(knn_density(jnp.asarray(emb), jnp.asarray(valid), k=5, block=4))
    np.testing.assert_allclose(got, brute_density(emb.astype(np.float64), valid, 5), atol=1e-6)
    only = np.zeros(8, bool)
    only[3] = True  # a lone valid row has no neighbour -> 0
    assert np.all(np.asarray(knn_density(jnp.asarray(emb), jnp.asarray(only), k=2, block=4)) == 0)


# ---------------------------------------------------------------- bus: density weighting + class balance
def direct_apply(v, x):
    """Logits and embeddings taken straight from the input: x = [logits(2) | emb(3)]."""
    return x[:, :2] * v, x[:, 2:]


def test_bus_prefers_dense_region_at_equal_entropy():
    rng = np.random.default_rng(0)
    cluster = np.array([1.0, 0.0, 0.0]) + 0.01 * rng.normal(size=(14, 3))
    far = np.array([[-1.0, 0.2, 0.0], [0.0, -1.0, 0.3]])
    emb = np.concatenate([cluster, far]).astype(np.float32)
    logits = np.zeros((16, 2), np.float32)
    logits[:, 0] = 3.0
    logits[[0, 14], 0] = 0.5  # rows 0 (dense) and 14 (isolated): same, highest entropy
    x = jnp.asarray(np.concatenate([logits, emb], 1))
    cand = np.ones(16, bool)
    out = scorer(direct_apply, ("bus", "entropy"), chunk=8, knn_k=3, knn_block=8, density="cosine")(
        jnp.float32(1.0), x, cand, np.zeros(16, bool), jax.random.key(0))
    ent, bus = np.asarray(out["scores"]["entropy"]), np.asarray(out["scores"]["bus"])
    assert ent[0] == pytest.approx(ent[14])
    assert bus[0] > bus[14] and np.argmax(bus) == 0


def test_bus_selection_is_class_balanced_with_quota_handoff():
    scores = {"bus": np.array([9, 8, 7, 6, 5, 4, 1, 0.5, 3, 2], np.float32)}
    pred = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    cand = np.ones(10, bool)

    def pick(k, c, cnd=cand):
        picks = select(scores, pred, cnd, budget=k, num_classes=c, selectors=("bus",))
        return sorted(e["index"] for e in picks)

    # K=6, C=3: two per predicted class although class 0 holds the six best scores
    assert pick(6, 3) == [0, 1, 6, 7, 8, 9]
    # K=7: K % C = 1 leftover goes to the best remaining row overall
    assert pick(7, 3) == [0, 1, 2, 6, 7, 8, 9]
    # class 1 has a single candidate: its unused quota is handed to the best remaining rows
    cnd = cand.copy()
    cnd[7] = False
    assert pick(6, 3, cnd) == [0, 1, 2, 6, 8, 9]
    # an entropy selector would have taken class 0 only
    assert sorted(e["index"] for e in select({"entropy": scores["bus"]}, pred, cand, budget=6, num_classes=3,
                                             selectors=("entropy",))) == [0, 1, 2, 3, 4, 5]


# ---------------------------------------------------------------- coreset
def np_kcenter(emb, cand, centers, budget):
    emb = emb.astype(np.float64)
    mind = np.full(len(emb), np.inf)
    for c in np.flatnonzero(centers):
        mind = np.minimum(mind, ((emb - emb[c]) ** 2).sum(1))
    avail = cand & ~centers
    picks = []
    for _ in range(budget):
        if not avail.any():
            break
        i = int(np.argmax(np.where(avail, mind, -np.inf)))
        picks.append(i)
        avail[i] = False
        mind = np.minimum(mind, ((emb - emb[i]) ** 2).sum(1))
    return picks


@pytest.mark.parametrize("n_labeled", [0, 7, 300])
def test_coreset_select_matches_numpy_greedy_k_center(n_labeled):
    rng = np.random.default_rng(n_labeled)
    n = 400
    emb = rng.normal(size=(n, 4)).astype(np.float32)
    centers = np.zeros(n, bool)
    centers[rng.choice(n, n_labeled, replace=False)] = True
    cand = ~centers & (rng.random(n) > 0.1)
    got = np.asarray(coreset_select(jnp.asarray(emb), jnp.asarray(cand), jnp.asarray(centers), 12))
    assert got.tolist() == np_kcenter(emb, cand, centers, 12)


def test_acquire_coreset_follows_greedy_order_and_its_scores_rank_the_same():
    rng = np.random.default_rng(7)
    n = 64
    x = np.concatenate([rng.normal(size=(n, 2)), rng.normal(size=(n, 3))], 1).astype(np.float32)
    labeled = np.zeros(n, bool)
    labeled[:6] = True
    cand = ~labeled
    cand[60:] = False  # padding
    sc = scorer(direct_apply, ("coreset",), budget=6, chunk=16)
    picks = acquire(sc, jnp.float32(1.0), jnp.asarray(x), cand, labeled, jax.random.key(0), num_classes=2)
    ref = np_kcenter(x[:, 2:], cand, labeled, 6)
    assert [q.index for q in picks] == ref
    out = sc(jnp.float32(1.0), jnp.asarray(x), cand, labeled, jax.random.key(0))
    score = np.asarray(out["scores"]["coreset"])
    assert np.argsort(-score, kind="stable")[:6].tolist() == ref


def test_coreset_select_returns_minus_one_past_the_candidates():
    emb = jnp.arange(10.0).reshape(5, 2)
    cand = jnp.array([True, False, True, False, False])
    got = np.asarray(coreset_select(emb, cand, jnp.array([False, False, False, False, True]), 4))
    assert got.tolist() == [0, 2, -1, -1]


# ---------------------------------------------------------------- select: union, dedup, never a non-candidate
def test_select_union_dedup_and_never_non_candidates():
    n = 12
    cand = np.ones(n, bool)
    cand[[0, 5]] = False  # labeled / padded rows
    aus = np.arange(n, dtype=np.float32)[::-1].copy()  # prefers low indices
    bus = np.arange(n, dtype=np.float32)  # prefers high indices
    aus[~cand] = -np.inf
    bus[5] = 1e9  # a non-candidate with a huge score (not masked) must still never be picked
    bus[1] = 50.0  # also wanted by aus -> dedup
    picks = select({"aus": aus, "bus": bus}, np.zeros(n, int), cand, budget=3, num_classes=1,
                   selectors=("aus", "bus"))
    idx = [e["index"] for e in picks]
    assert len(idx) == len(set(idx))
    assert not set(idx) & {0, 5}
    assert idx == [1, 2, 3, 11, 10, 9]  # bus skips row 1 (taken by aus) and back-fills with its next best
    first = next(e for e in picks if e["index"] == 1)
    assert first["selector"] == "aus" and first["selectors"] == ["aus", "bus"]
    assert [e["selector"] for e in picks] == ["aus"] * 3 + ["bus"] * 3
    big = select({"aus": aus}, np.zeros(n, int), cand, budget=100, num_classes=1, selectors=("aus",))
    assert sorted(e["index"] for e in big) == np.flatnonzero(cand).tolist()


def test_user_errors():
    from boostmis_jax.defaults import validate
    with pytest.raises(UserError, match="al.selectors"):
        scorer(mlp_apply, ("nope",))
    with pytest.raises(UserError, match="repeats"):
        scorer(mlp_apply, "aus+aus")
    cfg = get_config()
    cfg.al.vat_ip = -1
    with pytest.raises(UserError, match="al.vat_ip"):
        validate(cfg)
    assert set(ALL) <= set(SELECTORS)


# ---------------------------------------------------------------- sharding + compile cache
def _pool(n_real, n, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), np.float32)
    x[:n_real] = rng.normal(size=(n_real, d))
    valid = np.arange(n) < n_real
    labeled = valid & (rng.random(n) < 0.15)
    return x, valid & ~labeled, labeled


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (simulated) devices")
def test_score_pool_sharded_over_8_devices_equals_single_device():
    v = make_mlp(jax.random.key(20))
    chunk, n = 4, 8 * 4 * 3
    x, cand, labeled = _pool(90, n)
    key = jax.random.key(3)
    sc = scorer(mlp_apply, ALL, budget=10, chunk=chunk, knn_block=8, knn_k=5, vat_ip=1, vat_eps=1.0)
    one = sc(v, jnp.asarray(x), cand, labeled, key)
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    xs, cs, ls = (jax.device_put(a, sharding) for a in (x, cand, labeled))
    assert infer_shards(xs, chunk) == 8
    many = sc(v, xs, cs, ls, key)
    assert len(many["scores"]["aus"].sharding.device_set) == 8
    for name in ALL:
        a, b = np.asarray(one["scores"][name]), np.asarray(many["scores"][name])
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
        np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=1e-5, atol=1e-6)
        assert np.all(a[90:] == -np.inf)
    np.testing.assert_array_equal(np.asarray(one["pred"]), np.asarray(many["pred"]))
    # the standalone VAT kernel (on the sharded pool) gives the very numbers `aus` ranks by
    vat = np.asarray(vat_scores(mlp_apply, v, xs, cs | ls, key, xi=1e-6, eps=1.0, ip=1, chunk=chunk))
    np.testing.assert_allclose(vat[cand], np.asarray(one["scores"]["aus"])[cand], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(one["coreset_idx"]), np.asarray(many["coreset_idx"]))
    p1 = acquire(sc, v, jnp.asarray(x), cand, labeled, key, num_classes=3)
    p8 = acquire(sc, v, xs, cs, ls, key, num_classes=3)
    assert [(e.index, e.selector) for e in p1] == [(e.index, e.selector) for e in p8]
    idx = [e.index for e in p8]
    assert len(idx) == len(set(idx)) and all(cand[i] for i in idx) and len(idx) >= 10


def test_score_pool_does_not_recompile_for_new_masks_or_weights():
    traces = []

    def apply_fn(v, x):
        traces.append(1)  # runs only while tracing
        return mlp_apply(v, x)

    x, cand, labeled = _pool(60, 64, seed=1)
    sc = scorer(apply_fn, ("aus", "bus", "coreset"), budget=5, chunk=16, knn_block=16, knn_k=4)
    x = jnp.asarray(x)
    first = acquire(sc, make_mlp(jax.random.key(0)), x, cand, labeled, jax.random.key(0), num_classes=3)
    n_traces = len(traces)
    assert n_traces > 0 and sc.compiles == 1
    cand2, labeled2 = cand.copy(), labeled.copy()
    for e in first:
        cand2[e.index], labeled2[e.index] = False, True
    second = acquire(sc, make_mlp(jax.random.key(1)), x, cand2, labeled2, jax.random.key(1), num_classes=3,
                     tau=0.5)
    assert len(traces) == n_traces and sc.compiles == 1
    assert not {e.index for e in first} & {e.index for e in second}


# ---------------------------------------------------------------- degree density, low-confidence pool
def brute_degree(emb, valid, k):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = e @ e.T
    rows = np.flatnonzero(valid)
    nbrs = {}
    for i in rows:
        others = [j for j in rows if j != i]
        nbrs[i] = set(np.asarray(others)[np.argsort(-sim[i, others], kind="stable")[:k]].tolist())
    out = np.zeros(len(emb))
    for i in rows:
        out[i] = len(nbrs[i] | {j for j in rows if i in nbrs[j]}) / (2 * k)
    return out


@pytest.mark.parametrize("n,block,k", [(96, 16, 4), (40, 8, 7)])
def test_degree_density_matches_brute_force_graph(n, block, k):
    rng = np.random.default_rng(n)
    emb = rng.normal(size=(n, 5)).astype(np.float32)
    valid = rng.random(n) > 0.25
    got = np.asarray(knn_density(jnp.asarray(emb), jnp.asarray(valid), k=k, block=block, kind="degree"))
    np.testing.assert_allclose(got, brute_degree(emb.astype(np.float64), valid, k), atol=1e-6)


def test_bus_degree_density_ranks_dense_over_isolated_at_equal_entropy():
    """The default density: a row inside a cluster is many rows' neighbour; an isolated one is nobody's."""
    rng = np.random.default_rng(1)
    cluster = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.normal(size=(28, 3))
    far = np.array([[-1.0, 0.2, 0.0], [0.0, -1.0, 0.3], [0.0, 0.1, -1.0], [-0.6, -0.6, 0.2]])
    emb = np.concatenate([cluster, far]).astype(np.float32)
    logits = np.zeros((32, 2), np.float32)
    logits[:, 0] = 3.0
    logits[[0, 28], 0] = 0.5  # row 0 (cluster centre-ish) and row 28 (isolated): equal, highest entropy
    emb[0] = [1.0, 0.0, 0.0]
    x = jnp.asarray(np.concatenate([logits, emb], 1))
    out = scorer(direct_apply, ("bus", "entropy"), chunk=8, knn_k=4, knn_block=8)(
        jnp.float32(1.0), x, np.ones(32, bool), np.zeros(32, bool), jax.random.key(0))
    ent, bus = np.asarray(out["scores"]["entropy"]), np.asarray(out["scores"]["bus"])
    assert ent[0] == pytest.approx(ent[28])
    assert bus[0] > bus[28] and np.argmax(bus) == 0


def test_low_confidence_candidates_and_fill_with_least_confident():
    # confidences of 16 rows set through logits: rows 0..3 below 0.7, the rest confident
    n = 16
    logits = np.zeros((n, 2), np.float32)
    logits[:, 0] = np.linspace(0.1, 4.0, n)
    emb = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    x = jnp.asarray(np.concatenate([logits, emb], 1))
    conf = np.asarray(jax.nn.softmax(jnp.asarray(logits))).max(1)
    labeled = np.zeros(n, bool)
    labeled[1] = True
    sc = scorer(direct_apply, ("entropy",), budget=2, chunk=8, candidates="low_confidence")
    out = sc(jnp.float32(1.0), x, ~labeled, labeled, jax.random.key(0), 0.7)
    cand = np.asarray(out["candidate"])
    assert cand.tolist() == ((conf < 0.7) & ~labeled).tolist() and cand.sum() >= 2
    # fewer than the budget below tau: the least confident unlabeled rows fill up to the budget
    sc4 = scorer(direct_apply, ("entropy", "margin"), budget=3, chunk=8, candidates="low_confidence")
    out = sc4(jnp.float32(1.0), x, ~labeled, labeled, jax.random.key(0), 0.6)
    cand = np.asarray(out["candidate"])
    least = [i for i in np.argsort(conf, kind="stable") if not labeled[i]][:6]
    assert sorted(np.flatnonzero(cand).tolist()) == sorted(least)
    picks = acquire(sc4, jnp.float32(1.0), x, ~labeled, labeled, jax.random.key(0), num_classes=2, tau=0.6)
    assert len(picks) == 6 and all(cand[q.index] for q in picks)
