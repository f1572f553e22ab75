"""Threshold registry on crafted probabilities: each entry against its paper's update rule."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from boostmis_jax.defaults import get_config
from boostmis_jax.errors import UserError
from boostmis_jax.thresholds import (
    OUT_OF_POOL,
    THRESHOLDS,
    ThresholdConfig,
    boostmis_tau,
    flexmatch_class_thresholds,
    get_threshold,
    threshold_config,
)

W = 4  # status window of the crafted boostmis runs
CFG = ThresholdConfig(a=0.9, b=0.05, cycle_budget=20, fixed=0.95, tau_min=0.1, tau_max=1.0, status_conf=0.95,
                      status_window=W, flex_mapping="convex", flex_warmup=True, free_momentum=0.9)


def probs_with_conf(conf):
    conf = np.asarray(conf, np.float32)
    return jnp.asarray(np.stack([conf, 1 - conf], -1))


def run(name, state, probs, idx, n_active=0, cfg=CFG, valid=None):
    probs = probs if isinstance(probs, jax.Array) else probs_with_conf(probs)
    valid = jnp.ones((len(idx),), bool) if valid is None else jnp.asarray(valid)
    return get_threshold(name).update(state, probs, jnp.asarray(idx, jnp.int32), valid, jnp.asarray(n_active),
                                      cfg)


def batch_with_rate(rate, n=20):
    """n rows, round(rate*n) of them confident (0.99), the rest at 0.7 (above tau, below status_conf)."""
    k = round(rate * n)
    return [0.99] * k + [0.7] * (n - k)


def boostmis_trace(rates, n_active=0, cfg=CFG):
    """Per step: (tau that filtered the step, tau the next step will use, learning status after it)."""
    thr = get_threshold("boostmis")
    state = thr.init(8, 2, cfg)
    out = []
    for r in rates:
        _, tau, state, logs = run("boostmis", state, batch_with_rate(r), range(20), n_active, cfg)
        _, nxt, _, _ = run("boostmis", state, [0.5], [0], n_active, cfg)  # probe only; state not kept
        out.append((float(tau), float(nxt), float(logs["learning_status"])))
    return out


# ----------------------------------------------------------------------------------------------------
# registry and config
# ----------------------------------------------------------------------------------------------------
def test_registry_has_all_and_rejects_unknown():
    assert {"boostmis", "flexmatch", "freematch", "fixed", "none"} <= set(THRESHOLDS)
    with pytest.raises(UserError, match="ssl.threshold"):
        get_threshold("flexmatchh")


def test_threshold_config_reads_the_ssl_block_and_rejects_bad_values():
    ssl = get_config().ssl
    cfg = threshold_config(ssl, cycle_budget=100)
    assert cfg.cycle_budget == 100 and cfg.a == ssl.a and cfg.status_window == ssl.status_window
    hash(cfg)  # static argument of the jitted step
    bad = get_config().ssl
    bad.status_window = 0
    with pytest.raises(UserError, match="ssl.status_window"):
        threshold_config(bad, cycle_budget=1)
    bad = get_config().ssl
    bad.fairness_weight = 0.01   # needs freematch's state
    with pytest.raises(UserError, match="ssl.fairness_weight"):
        threshold_config(bad, cycle_budget=1)
    bad.threshold = "freematch"
    assert threshold_config(bad, cycle_budget=1).free_momentum == bad.free_momentum


def test_fixed_masks_at_095_and_logs_nothing():
    mask, tau, _, logs = run("fixed", {}, [0.96, 0.94, 0.95, 0.2], [0, 1, 2, 3])
    assert float(tau) == pytest.approx(0.95)
    assert mask.tolist() == [True, False, True, False]  # conf 0.2 means class 1 at 0.8: below too
    assert logs == {}


def test_none_masks_everything():
    mask, _, _, logs = run("none", {}, [1.0, 0.99], [0, 1])
    assert not bool(mask.any()) and logs == {}


# ----------------------------------------------------------------------------------------------------
# boostmis
# ----------------------------------------------------------------------------------------------------
def test_boostmis_formula_matches_paper():
    # tau = a*min(1, Ct/Ct-1) + b*NA/(2K), 2K = 20 here
    assert float(boostmis_tau(50.0, 100.0, 0.0, CFG)) == pytest.approx(0.45)
    assert float(boostmis_tau(200.0, 100.0, 0.0, CFG)) == pytest.approx(0.9)
    assert float(boostmis_tau(100.0, 100.0, 10.0, CFG)) == pytest.approx(0.9 + 0.05 * 10 / 20)
    assert float(boostmis_tau(5.0, 0.0, 0.0, CFG)) == pytest.approx(0.9)  # no previous status: ratio 1


@pytest.mark.parametrize("n_active", [0, 1, 7, 19, 20])
def test_tau_never_exceeds_a_plus_b_when_na_is_the_latest_round(n_active):
    # N_A is the latest round's count, <= 2K; the raw formula (no clip) stays <= a + b for any status.
    for now, prev in [(0.0, 1.0), (1.0, 1.0), (3.0, 1.0), (1.0, 0.0)]:
        assert float(boostmis_tau(now, prev, n_active, CFG)) <= CFG.a + CFG.b + 1e-7
    # and so does the tau the update applies, across a long run with rising confidence (tau_max = 1)
    taus = [t for t, _, _ in boostmis_trace(np.linspace(0.1, 0.9, 12), n_active=n_active)]
    assert max(taus) <= CFG.a + CFG.b + 1e-7
    assert taus[-1] == pytest.approx(CFG.a + CFG.b * n_active / CFG.cycle_budget)


def test_boostmis_steady_rise_keeps_tau_at_its_ceiling():
    trace = boostmis_trace(np.linspace(0.05, 0.95, 20), n_active=10)
    ceiling = 0.9 + 0.05 * 10 / 20
    assert all(t == pytest.approx(ceiling) for t, _, _ in trace)
    assert all(s == pytest.approx(1.0) for _, _, s in trace)


def test_boostmis_drop_lowers_tau_within_the_window_then_recovers():
    rates = [0.8] * (2 * W) + [0.4] * (3 * W)
    trace = boostmis_trace(rates)
    nxt = [n for _, n, _ in trace]
    drop = 2 * W  # index of the first low batch
    assert all(n == pytest.approx(0.9) for n in nxt[:drop])             # flat before: tau = a
    assert nxt[drop] < 0.9 - 0.05                                       # the very next step already lower
    # after W low steps the current window is all low: status = 0.4/0.8, tau = a/2
    assert nxt[drop + W - 1] == pytest.approx(0.45, abs=1e-5)
    assert min(nxt) == pytest.approx(0.45, abs=1e-5)
    assert np.all(np.diff(nxt[drop:drop + W]) <= 1e-7)                  # falls monotonically in the window
    # the mask of each step uses the status before it: the first low batch is still filtered at a
    assert trace[drop][0] == pytest.approx(0.9)
    # flat at the new level for 2W steps: the status is 1 again
    assert nxt[drop + 2 * W - 1] == pytest.approx(0.9)


def test_boostmis_status_is_not_batch_noise():
    # Stationary confidences (every row confident with prob 0.6): a per-batch status (W = 1) dips on
    # about every other step; the windowed one stays near 1.
    rng = np.random.default_rng(0)
    thr = get_threshold("boostmis")
    spread = {}
    for window in (1, 32):
        cfg = CFG._replace(status_window=window)
        state = thr.init(8, 2, cfg)
        statuses = []
        upd = jax.jit(thr.update, static_argnums=5)
        for _ in range(200):
            conf = np.where(rng.random(64) < 0.6, 0.99, 0.7)
            _, _, state, logs = upd(state, probs_with_conf(conf), jnp.zeros((64,), jnp.int32),
                                    jnp.ones((64,), bool), jnp.asarray(0), cfg)
            statuses.append(float(logs["learning_status"]))
        spread[window] = 1.0 - np.mean(statuses[2 * window:])
    assert spread[1] > 0.04
    assert spread[32] < spread[1] / 4


def test_boostmis_padded_rows_and_empty_batches_change_nothing():
    thr = get_threshold("boostmis")
    state = thr.init(8, 2, CFG)
    mask, _, s1, _ = run("boostmis", state, [0.99, 0.99, 0.99], [0, 1, 2], valid=[True, False, False])
    assert mask.tolist() == [True, False, False]
    assert float(s1["conf_ring"][0]) == 1 and float(s1["seen_ring"][0]) == 1
    _, _, s2, _ = run("boostmis", s1, [0.99, 0.99], [0, 1], valid=[False, False])
    for k in s1:
        np.testing.assert_array_equal(np.asarray(s1[k]), np.asarray(s2[k]))


def test_boostmis_logs_learning_status_and_confident_rate():
    state = get_threshold("boostmis").init(8, 2, CFG)
    _, _, _, logs = run("boostmis", state, [0.99, 0.99, 0.7, 0.7], [0, 1, 2, 3])
    assert set(logs) == {"learning_status", "confident_rate"}
    assert float(logs["confident_rate"]) == pytest.approx(0.5)
    assert float(logs["learning_status"]) == 1.0
    assert all(v.dtype == jnp.float32 and v.shape == () for v in logs.values())


# ----------------------------------------------------------------------------------------------------
# flexmatch
# ----------------------------------------------------------------------------------------------------
def test_flexmatch_class_thresholds_follow_the_paper():
    # memory over 10 samples: 3 of class 0, 1 of class 1, 6 never confident (unused)
    memory = jnp.asarray([0, 0, 0, 1] + [-1] * 6, jnp.int32)
    # warm-up: beta = sigma / max(max sigma, N_unused) = [3/6, 1/6]; convex M(x) = x / (2 - x)
    beta = np.array([3 / 6, 1 / 6])
    np.testing.assert_allclose(flexmatch_class_thresholds(memory, 2, CFG), 0.95 * beta / (2 - beta), rtol=1e-6)
    # without warm-up: beta = sigma / max sigma = [1, 1/3]
    beta = np.array([1.0, 1 / 3])
    np.testing.assert_allclose(flexmatch_class_thresholds(memory, 2, CFG._replace(flex_warmup=False)),
                               0.95 * beta / (2 - beta), rtol=1e-6)
    # linear mapping M(x) = x
    np.testing.assert_allclose(flexmatch_class_thresholds(memory, 2, CFG._replace(flex_mapping="linear")),
                               0.95 * np.array([3 / 6, 1 / 6]), rtol=1e-6)
    # labeled rows (out of the pool) are not unused samples
    memory = jnp.asarray([0, 0, 0, 1] + [OUT_OF_POOL] * 6, jnp.int32)
    beta = np.array([1.0, 1 / 3])
    np.testing.assert_allclose(flexmatch_class_thresholds(memory, 2, CFG), 0.95 * beta / (2 - beta), rtol=1e-6)


def test_flexmatch_update_masks_with_the_previous_memory_then_records_confident_predictions():
    thr = get_threshold("flexmatch")
    state = thr.init(8, 2, CFG)
    # empty memory: beta = 0, every class threshold 0, everything passes (the warm-up's low start)
    probs = probs_with_conf([0.97, 0.6, 0.01, 0.99, 0.98])   # preds 0, 0, 1, 0, 0
    mask, tau, state, logs = run("flexmatch", state, probs, range(5))
    assert mask.all() and float(tau) == 0.0
    assert state["memory"].tolist() == [0, -1, 1, 0, 0, -1, -1, -1]   # only conf > 0.95 enters
    assert set(logs) == {"threshold_min", "threshold_max"}
    # sigma = [3, 1], N_unused = 4: beta = [3/4, 1/4], tau_c = 0.95 * beta / (2 - beta)
    t0, t1 = 0.95 * 0.75 / 1.25, 0.95 * 0.25 / 1.75
    mask, tau, state, _ = run("flexmatch", state, probs_with_conf([t0 + 0.01, t0 - 0.01, 0.2]), [5, 6, 1])
    assert mask.tolist() == [True, False, True]    # the class-1 row (p = 0.8) only needs t1
    assert float(tau) == pytest.approx((t0 + t1) / 2)
    # a later confident prediction overwrites the memory; an unconfident one leaves it
    _, _, state, _ = run("flexmatch", state, probs_with_conf([0.01, 0.5]), [0, 3])
    assert state["memory"].tolist() == [1, -1, 1, 0, 0, -1, -1, -1]


def test_flexmatch_padded_rows_and_labeled_rows():
    thr = get_threshold("flexmatch")
    state = thr.init(4, 2, CFG)
    _, _, s, _ = run("flexmatch", state, [0.99, 0.99], [0, 1], valid=[True, False])
    assert s["memory"].tolist() == [0, -1, -1, -1]
    s = thr.leave_pool(s, jnp.asarray([False, False, True, True]))
    assert s["memory"].tolist() == [0, -1, OUT_OF_POOL, OUT_OF_POOL]


# ----------------------------------------------------------------------------------------------------
# freematch
# ----------------------------------------------------------------------------------------------------
def test_freematch_update_rule_on_crafted_probs():
    cfg = CFG._replace(free_momentum=0.9)
    thr = get_threshold("freematch")
    state = thr.init(8, 3, cfg)
    np.testing.assert_allclose(state["p_tilde"], [1 / 3] * 3)
    assert float(state["tau_global"]) == pytest.approx(1 / 3)
    probs = jnp.asarray([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]], jnp.float32)
    mask, tau, new, logs = run("freematch", state, probs, range(4), cfg=cfg)
    p = np.asarray(probs)
    tau_g = 0.9 / 3 + 0.1 * p.max(1).mean()
    p_tilde = 0.9 / 3 + 0.1 * p.mean(0)
    hist = 0.9 / 3 + 0.1 * np.array([2, 1, 1]) / 4
    assert float(new["tau_global"]) == pytest.approx(tau_g, rel=1e-6)
    np.testing.assert_allclose(new["p_tilde"], p_tilde, rtol=1e-6)
    np.testing.assert_allclose(new["label_hist"], hist, rtol=1e-6)
    tau_c = p_tilde / p_tilde.max() * tau_g       # computed after this batch's EMA step, as the paper
    assert mask.tolist() == (p.max(1) >= tau_c[p.argmax(1)]).tolist()
    assert float(tau) == pytest.approx(tau_c.mean(), rel=1e-6)
    assert float(logs["threshold_max"]) == pytest.approx(tau_g, rel=1e-6)
    # padded rows are not in the means; an all-padding batch changes nothing
    _, _, new2, _ = run("freematch", state, probs, range(4), cfg=cfg, valid=[True, True, True, False])
    assert float(new2["tau_global"]) == pytest.approx(0.9 / 3 + 0.1 * p[:3].max(1).mean(), rel=1e-6)
    _, _, same, _ = run("freematch", state, probs, range(4), cfg=cfg, valid=[False] * 4)
    for k in state:
        np.testing.assert_array_equal(np.asarray(same[k]), np.asarray(state[k]))


def test_freematch_threshold_rises_as_the_model_grows_confident():
    cfg = CFG._replace(free_momentum=0.5)
    state = get_threshold("freematch").init(8, 2, cfg)
    taus = []
    for c in (0.6, 0.7, 0.8, 0.9, 0.95):
        _, _, state, logs = run("freematch", state, [c] * 4, range(4), cfg=cfg)
        taus.append(float(logs["threshold_max"]))
    assert np.all(np.diff(taus) > 0) and taus[-1] < 0.95


# ----------------------------------------------------------------------------------------------------
# every threshold: fixed-shape pytree state, and the same result on 8 devices as on one
# ----------------------------------------------------------------------------------------------------
def crafted_batch(rng, n=64, c=3, num_train=96):
    logits = rng.normal(0, 3, (n, c)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    idx = rng.choice(num_train, n, replace=False).astype(np.int32)
    valid = np.ones(n, bool)
    valid[-5:] = False  # padding
    return probs, idx, valid


@pytest.mark.parametrize("name", ["boostmis", "flexmatch", "freematch", "fixed"])
def test_state_keeps_its_shapes_and_dtypes(name):
    thr = get_threshold(name)
    state = thr.init(96, 3, CFG)
    probs, idx, valid = crafted_batch(np.random.default_rng(1))
    _, _, new, logs = thr.update(state, jnp.asarray(probs), jnp.asarray(idx), jnp.asarray(valid),
                                 jnp.asarray(5), CFG)
    spec = lambda t: jax.tree.map(lambda a: (a.shape, a.dtype), t)
    assert spec(new) == spec(state)
    assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(new))
    assert all(v.shape == () and v.dtype == jnp.float32 for v in logs.values())


@pytest.mark.parametrize("name", ["boostmis", "flexmatch", "freematch"])
def test_update_is_identical_sharded_over_8_devices(name):
    devices = jax.devices()
    assert len(devices) == 8, "tests/conftest.py sets 8 CPU devices"
    mesh = Mesh(np.asarray(devices), ("data",))
    rows, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    thr = get_threshold(name)
    update = jax.jit(thr.update, static_argnums=5)
    rng = np.random.default_rng(2)
    batches = [crafted_batch(rng) for _ in range(3 * W)]
    results = {}
    for sharded in (False, True):
        state = thr.init(96, 3, CFG)
        if sharded:
            state = jax.device_put(state, rep)
        masks = []
        for probs, idx, valid in batches:
            args = (jnp.asarray(probs), jnp.asarray(idx), jnp.asarray(valid))
            if sharded:
                args = jax.device_put(args, rows)
                assert len(args[0].sharding.device_set) == 8
            mask, tau, state, logs = update(state, *args, jnp.asarray(5), CFG)
            masks.append((np.asarray(mask), float(tau), {k: float(v) for k, v in logs.items()}))
        results[sharded] = (masks, jax.tree.map(np.asarray, state))
    (m1, s1), (m8, s8) = results[False], results[True]
    for (a1, t1, l1), (a8, t8, l8) in zip(m1, m8):
        np.testing.assert_array_equal(a1, a8)
        assert t1 == pytest.approx(t8, rel=1e-6)
        assert l1 == pytest.approx(l8, rel=1e-6)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), s1, s8)
    assert any(a.any() for a, _, _ in m1) and not all(a.all() for a, _, _ in m1)  # not vacuous


def test_cycle_inputs_take_labeled_rows_out_of_the_pool_and_set_targets():
    import jax

    from boostmis_jax.state import set_cycle_inputs
    thr = get_threshold("flexmatch")
    state = {"ssl": {"thr": {"memory": jnp.asarray([0, 1, 1, -1, 0, 1], jnp.int32)},
                     "p_model": jnp.full((2,), .5), "p_target": jnp.full((2,), .5)},
             "n_active": jnp.zeros((), jnp.int32)}
    out = set_cycle_inputs(state, np.asarray([1, 2, 4, 5]), np.asarray([0, 1, 1, 1, 0, 1]), 3, 2,
                           jax.devices()[0], thr)
    assert out["ssl"]["thr"]["memory"].tolist() == [0, -2, -2, -1, -2, -2]
    assert out["ssl"]["p_target"].tolist() == pytest.approx([0.25, 0.75]) and int(out["n_active"]) == 3
