"""Issue 20: AUS at a calibrated radius, al.batch (topk | cluster | stochastic), BADGE, staged selectors,
estimated-class balancing, round diagnostics; through the CLI on 1 and 4 devices."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY, TINY_AL, main_cmd, run_cmd

from boostmis_jax.acquisition import acquire_round, make_scorer, parse_stages, round_size
from boostmis_jax.acquisition.badge import badge_order
from boostmis_jax.acquisition.calibration import estimate_classes, fit_temperature, saerens_prior
from boostmis_jax.acquisition.kmeans import gumbel_rows
from boostmis_jax.acquisition.selection import choose_stage, deficit_quotas, mean_pairwise_cosine, select
from boostmis_jax.acquisition.vat import calibrate_radius, perturbed_logits
from boostmis_jax.defaults import get_config
from boostmis_jax.errors import UserError

AL = get_config().al


def scorer(apply_fn, selectors, budget=4, **over):
    kw = {"chunk": 8, "knn_k": 3, "knn_block": 8, "vat_xi": AL.vat_xi, "vat_eps": None, "vat_ip": 1,
          "density": AL.density, "candidates": "all", **over}
    return make_scorer(apply_fn, selectors=selectors, budget=budget, **kw)


def direct_apply(v, x):
    """x = [logits(2) | emb(rest)]."""
    return x[:, :2] * v, x[:, 2:]


# ---------------------------------------------------------------- AUS radius
def boundary_apply(v, x):
    """Binary model whose logit gap f = x0 * (1 + 9 x1^2): at equal f (equal confidence) a row with x1 = 1
    is 10x nearer the boundary x0 = 0 than a row with x1 = 0."""
    f = x[:, 0] * (1.0 + 9.0 * x[:, 1] ** 2) * v
    return jnp.stack([f, jnp.zeros_like(f)], 1), x


def test_aus_prefers_the_row_nearer_the_boundary_at_equal_confidence():
    rng = np.random.default_rng(0)
    filler = np.stack([rng.uniform(3, 5, 30), np.zeros(30)], 1)
    x = np.concatenate([[[0.1, 1.0], [1.0, 0.0]], filler]).astype(np.float32)  # rows 0 and 1: f = 1
    sc = scorer(boundary_apply, "aus", budget=1)
    out = sc(jnp.float32(1.0), jnp.asarray(x), np.ones(32, bool), np.zeros(32, bool), jax.random.key(0))
    probs = np.asarray(out["probs"])
    assert probs[0, 0] == pytest.approx(probs[1, 0], abs=1e-6)
    aus = np.asarray(out["scores"]["aus"])
    assert aus[0] > aus[1] and np.argmax(aus) == 0
    # the radius: the largest on the grid with <= 10% flips; the measured flip rate at it is reported
    rates = np.asarray(out["aus_flip_rates"])
    eps = float(out["aus_eps"])
    assert float(out["aus_flip_rate"]) <= 0.1 and eps == 1.0 and rates[0] == float(out["aus_flip_rate"])
    # a fixed radius still overrides the grid
    fixed = scorer(boundary_apply, "aus", budget=1, vat_eps=0.3)(jnp.float32(1.0), jnp.asarray(x),
                                                                np.ones(32, bool), np.zeros(32, bool),
                                                                jax.random.key(0))
    assert float(fixed["aus_eps"]) == pytest.approx(0.3)


def test_calibrate_radius_takes_the_largest_radius_under_the_target():
    flips = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0]], bool)  # radii largest first
    g, rates = calibrate_radius(jnp.asarray(flips), jnp.ones(4, bool), 0.3)
    np.testing.assert_allclose(np.asarray(rates), [0.75, 0.25, 0.0])
    assert int(g) == 1
    g, _ = calibrate_radius(jnp.asarray(flips), jnp.ones(4, bool), 0.0)
    assert int(g) == 2
    g, _ = calibrate_radius(jnp.ones((4, 3), bool), jnp.ones(4, bool), 0.1)
    assert int(g) == 2  # nothing under the target: the smallest radius


def test_perturbed_inputs_stay_in_their_valid_range():
    seen = []

    def apply_fn(v, z):
        seen.append(z)
        return z.reshape(z.shape[0], -1)[:, :2], z

    x = jnp.full((2, 4, 4, 1), 0.95)
    d = jnp.ones_like(x) / 4.0
    perturbed_logits(apply_fn, None, x, d, 2.0, (0.0, 1.0))
    assert float(jnp.max(seen[-1])) <= 1.0 and float(jnp.min(seen[-1])) >= 0.0


# ---------------------------------------------------------------- al.batch
def blob_pool(n_blobs=4, per=8, seed=0):
    """Rows [logits | emb]: 4 well-separated blobs; entropy highest in blob 0."""
    rng = np.random.default_rng(seed)
    emb = np.concatenate([np.eye(4)[b] * 5 + 0.05 * rng.normal(size=(per, 4)) for b in range(n_blobs)])
    logits = np.zeros((n_blobs * per, 2), np.float32)
    logits[:, 0] = np.repeat(np.arange(n_blobs) + 0.1, per) + 0.01 * rng.random(n_blobs * per)
    return np.concatenate([logits, emb], 1).astype(np.float32)


def test_cluster_batch_spreads_picks_over_clusters_topk_does_not():
    x = jnp.asarray(blob_pool())
    n = x.shape[0]
    blob = np.repeat(np.arange(4), 8)
    args = (jnp.float32(1.0), x, np.ones(n, bool), np.zeros(n, bool), jax.random.key(1))
    top, _ = acquire_round(scorer(direct_apply, "entropy"), *args, num_classes=2)
    clu, diag = acquire_round(scorer(direct_apply, "entropy", batch="cluster"), *args, num_classes=2)
    assert sorted(blob[[q.index for q in top]].tolist()) == [0, 0, 0, 0]
    assert sorted(blob[[q.index for q in clu]].tolist()) == [0, 1, 2, 3]
    assert diag["selectors"]["entropy"]["picks_mean_cosine"] < 0.5


def test_stochastic_batch_samples_by_rank_exact_budget():
    x = jnp.asarray(blob_pool())
    n = x.shape[0]
    sc = scorer(direct_apply, "entropy", budget=4, batch="stochastic")
    counts = np.zeros(n)
    for seed in range(12):
        qs = acquire_round(sc, jnp.float32(1.0), x, np.ones(n, bool), np.zeros(n, bool), jax.random.key(seed),
                           num_classes=2)[0]
        idx = [q.index for q in qs]
        assert len(idx) == len(set(idx)) == 4
        counts[idx] += 1
    ent = -np.sum(np.asarray(jax.nn.softmax(x[:, :2])) * np.asarray(jax.nn.log_softmax(x[:, :2])), 1)
    order = np.argsort(-ent)
    assert counts[order[:8]].sum() > counts[order[-8:]].sum()      # high scores drawn more often
    assert len(np.flatnonzero(counts)) > 4                          # but not always the same rows
    assert sc.compiles == 1


# ---------------------------------------------------------------- BADGE
def test_badge_matches_numpy_kmeanspp_on_explicit_gradient_embeddings():
    rng = np.random.default_rng(0)
    n, c, e = 40, 3, 5
    probs = rng.dirichlet(np.ones(c), n).astype(np.float32)
    emb = rng.normal(size=(n, e)).astype(np.float32)
    avail = rng.random(n) > 0.2
    key = jax.random.key(5)
    got = np.asarray(badge_order(jnp.asarray(probs), jnp.asarray(emb), jnp.asarray(avail), key, budget=6)[0])
    g = np.einsum("nc,ne->nce", probs - np.eye(c)[probs.argmax(1)], emb).reshape(n, -1).astype(np.float64)
    av, picks = avail.copy(), []
    mind = np.full(n, np.inf)
    for t in range(6):
        if t == 0:
            i = int(np.argmax(np.where(av, (g * g).sum(1), -1)))
        else:
            w = np.where(av, mind, 0.0)
            noise = np.asarray(gumbel_rows(jax.random.fold_in(key, t), n), np.float64)
            i = int(np.argmax(np.where(w > 0, np.log(np.where(w > 0, w, 1)), -np.inf) + noise))
        picks.append(i)
        av[i] = False
        mind = np.minimum(mind, ((g - g[i]) ** 2).sum(1))
    assert got.tolist() == picks


# ---------------------------------------------------------------- stages and balancing
def test_staged_selectors_parse_size_and_switch():
    assert parse_stages("typiclust>aus+bus") == (("typiclust",), ("aus", "bus"))
    assert round_size("typiclust>aus+bus", 16) == 32 and round_size("aus+bus", 16) == 32
    with pytest.raises(UserError, match="al.selectors"):
        parse_stages("typiclust>")
    with pytest.raises(UserError, match="repeats"):
        parse_stages("aus>aus+bus")
    stages = (("typiclust",), ("aus", "bus"))
    assert choose_stage(stages, np.array([3, 40]), 20) == 0
    assert choose_stage(stages, np.array([20, 40]), 20) == 1
    assert choose_stage(stages, np.array([5, 200]), 20) == 1   # >= 4 * 20 * C labels: switch anyway
    assert choose_stage(stages, None, 20) == 0


def test_round_uses_the_stage_and_labels_exactly_its_size():
    x = jnp.asarray(blob_pool())
    n = x.shape[0]
    sc = scorer(direct_apply, "typiclust>entropy+margin", budget=2, switch_per_class=2)
    labeled = np.zeros(n, bool)
    labels = np.repeat(np.array([0, 1, 0, 1]), 8)
    args = (jnp.float32(1.0), x, ~labeled, labeled, jax.random.key(0))
    qs, diag = acquire_round(sc, *args, num_classes=2, labels=labels, true_y=labels)
    assert diag["stage"] == 0 and {q.selector for q in qs} == {"typiclust"}
    assert len({q.index for q in qs}) == 4
    assert diag["selectors"]["typiclust"]["picks_per_true_class"] == [2, 2]
    assert set(np.repeat(np.arange(4), 8)[[q.index for q in qs]]) == {0, 1, 2, 3}  # every blob covered
    labeled[[0, 1, 8, 9]] = True
    qs, diag = acquire_round(sc, jnp.float32(1.0), x, ~labeled, labeled, jax.random.key(0), num_classes=2,
                             labels=labels)
    assert diag["stage"] == 1 and {q.selector for q in qs} == {"entropy", "margin"}
    # a staged scorer computes only the round's stage: typiclust is skipped now (its scores are zeros)
    out = sc(jnp.float32(1.0), x, ~labeled, labeled, jax.random.key(0), stage=1)
    assert np.all(np.asarray(out["orders"]["typiclust"]) == 0)
    assert len({q.index for q in qs}) == 4 and not labeled[[q.index for q in qs]].any()
    assert sc.compiles == 1


def test_deficit_quotas_steer_toward_a_balanced_labeled_set():
    assert deficit_quotas(10, np.array([5, 5])) == [5, 5]
    assert deficit_quotas(10, np.array([2, 30])) == [10, 0]
    assert deficit_quotas(10, np.array([10, 14])) == [7, 3]
    assert sum(deficit_quotas(7, np.array([1, 2, 9]))) == 7
    scores = {"bus": np.array([9, 8, 7, 6, 5, 4, 1, 0.5], np.float32)}
    pred = np.zeros(8, int)
    est = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    picks = select(scores, pred, np.ones(8, bool), budget=4, num_classes=2, selectors=("bus",), classes=est,
                   class_counts=np.array([10, 2]))
    assert sorted(p["index"] for p in picks) == [4, 5, 6, 7]   # the estimated minority fills the round


def test_temperature_and_saerens_prior_recover_known_values():
    rng = np.random.default_rng(0)
    n = 4000
    y = (rng.random(n) < 0.5).astype(int)
    true_logit = np.where(y == 1, 1.0, -1.0) * 1.0 + rng.normal(size=n)  # posterior gap = 2 * logit
    logits = np.stack([np.zeros(n), 2 * true_logit], 1) * 3.0          # over-confident by 3x
    assert fit_temperature(logits, y) == pytest.approx(3.0, rel=0.1)
    # a pool with 10% of class 1: EM on calibrated posteriors finds it
    pool = np.concatenate([np.flatnonzero(y == 0)[:900], np.flatnonzero(y == 1)[:100]])
    est = estimate_classes(logits[pool], np.ones(len(pool), bool), logits, y, 2)
    assert est["prior"][1] == pytest.approx(0.1, abs=0.04)
    p = np.exp(logits[pool] / 3.0)
    p /= p.sum(1, keepdims=True)
    assert saerens_prior(p, np.array([0.5, 0.5]))[1] < 0.2


def test_random_over_all_rows_is_the_passive_control():
    x = jnp.asarray(blob_pool())
    n = x.shape[0]
    labeled = np.zeros(n, bool)
    labeled[:3] = True
    sc = scorer(direct_apply, "random", budget=6, candidates="all")
    qs, diag = acquire_round(sc, jnp.float32(1.0), x, ~labeled, labeled, jax.random.key(3), num_classes=2)
    idx = [q.index for q in qs]
    assert diag["candidates"] == n - 3 and len(set(idx)) == 6 and not labeled[idx].any()
    assert mean_pairwise_cosine(np.eye(3)) == pytest.approx(0.0)


def test_balanced_random_fills_class_quotas_at_random():
    """Random picks under class quotas: half per predicted class from a 90/10 pool (plain `random` takes
    the majority), a different draw per key and from `random`'s, exactly the budget in distinct rows."""
    n = 200
    x = np.zeros((n, 4), np.float32)
    x[:, 0] = np.where(np.arange(n) < 180, 2.0, -2.0)      # predicted class 0 for rows 0-179, 1 for the rest
    x[:, 2:] = np.random.default_rng(0).normal(size=(n, 2))
    labeled = np.zeros(n, bool)
    args = (jnp.float32(1.0), jnp.asarray(x), ~labeled, labeled)
    picks = {}
    for name in ("balanced_random", "random"):
        for seed in (0, 1):
            qs = acquire_round(scorer(direct_apply, name, budget=10, balance="predicted"), *args,
                               jax.random.key(seed), num_classes=2)[0]
            picks[name, seed] = sorted(q.index for q in qs)
    for seed in (0, 1):
        b = np.array(picks["balanced_random", seed])
        assert len(set(b)) == 10 and (b >= 180).sum() == 5    # 5 of the 20 minority rows, 5 of the 180
        assert (np.array(picks["random", seed]) >= 180).sum() < 5
    assert picks["balanced_random", 0] != picks["balanced_random", 1]
    assert picks["balanced_random", 0] != picks["random", 0]


# ---------------------------------------------------------------- the CLI: every new selector, 1 vs 4 devices
STAGED = ["--config.data.num_labels=20", "--config.al.selectors=typiclust>aus+bus+badge+probcover",
          "--config.al.batch=cluster", "--config.al.switch_per_class=3"]


@pytest.fixture(scope="module")
def staged_runs(tmp_path_factory):
    """Two cycles on 1 device; the first on 4 devices (the 4-device CPU run is the slow one)."""
    out = {}
    for devices, cycles in ((1, 2), (4, 1)):
        wd = tmp_path_factory.mktemp(f"staged{devices}")
        p = run_cmd(main_cmd(wd, *TINY, *TINY_AL, *STAGED, f"--config.al.cycles={cycles}"), devices=devices)
        assert p.returncode == 0, p.stderr[-3000:]
        out[devices] = json.loads((wd / "summary.json").read_text())
    return out


def test_staged_run_diagnostics_exact_picks_no_recompiles(staged_runs):
    s = staged_runs[1]
    assert s["compiles"]["scorer"] == 1 and s["compiles"]["train_step"] == 1
    stages = [("typiclust",), ("aus", "bus", "badge", "probcover")]
    for c in s["cycles"][:-1]:
        a = c["acquisition"]
        picks = s["picks"][str(c["cycle"])]
        idx = [p["index"] for p in picks]
        assert len(idx) == len(set(idx)) == 16
        assert {p["selector"] for p in picks} <= set(stages[a["stage"]])
        for name, d in a["selectors"].items():
            assert set(d) >= {"n", "picks_per_true_class", "picks_per_predicted_class", "mean_confidence",
                              "picks_mean_cosine"}
            assert sum(d["picks_per_true_class"]) == d["n"] == sum(p["selector"] == name for p in picks)
        assert set(a) >= {"pool_mean_cosine", "aus_flip_rate", "aus_entropy_spearman"}
    assert s["cycles"][0]["acquisition"]["stage"] == 0   # 2 labels per class < 3: the low-budget stage


def test_staged_run_identical_on_1_and_4_devices(staged_runs):
    one, four = staged_runs[1], staged_runs[4]
    assert [(p["index"], p["selector"]) for p in one["picks"]["0"]] == \
        [(p["index"], p["selector"]) for p in four["picks"]["0"]]
    a, b = one["cycles"][0]["acquisition"], four["cycles"][0]["acquisition"]
    assert a["stage"] == b["stage"] and a["aus_eps"] == b["aus_eps"]
    assert a["aus_flip_rate"] == pytest.approx(b["aus_flip_rate"])


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (simulated) devices")
@pytest.mark.parametrize("selectors,batch", [("typiclust+probcover+badge+bus", "cluster"),
                                             ("aus+entropy", "stochastic"), ("typiclust>aus+bus", "cluster")])
def test_new_selectors_and_batches_pick_the_same_rows_on_8_devices(selectors, batch):
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    rng = np.random.default_rng(0)
    x = np.concatenate([blob_pool(per=16, seed=1), blob_pool(per=16, seed=2)])  # 128 rows
    x[:, 2:] += 0.3 * rng.normal(size=x[:, 2:].shape)
    n = len(x)
    labeled = np.zeros(n, bool)
    labeled[rng.choice(n, 10, replace=False)] = True
    sc = scorer(direct_apply, selectors, budget=3, batch=batch)
    key = jax.random.key(2)
    one = acquire_round(sc, jnp.float32(1.0), jnp.asarray(x), ~labeled, labeled, key, num_classes=2,
                        labels=np.zeros(n, int))
    sharding = NamedSharding(Mesh(np.array(jax.devices()[:8]), ("data",)), P("data"))
    xs, us, ls = (jax.device_put(a, sharding) for a in (x, ~labeled, labeled))
    many = acquire_round(sc, jnp.float32(1.0), xs, us, ls, key, num_classes=2, labels=np.zeros(n, int))
    assert [(q.index, q.selector) for q in one[0]] == [(q.index, q.selector) for q in many[0]]
    assert len({q.index for q in one[0]}) == 3 * len(selectors.split(">")[-1].split("+"))
    assert sc.compiles == 2  # one program per sharding
