"""Threshold registry behaviour on crafted probabilities, and the paper's formula."""
import jax.numpy as jnp
import numpy as np
import pytest

from boostmis_jax.errors import UserError
from boostmis_jax.thresholds import THRESHOLDS, ThresholdConfig, boostmis_tau, get_threshold

CFG = ThresholdConfig(a=0.9, b=0.05, cycle_budget=20, fixed=0.95, tau_min=0.5, tau_max=0.99, tau_momentum=0.0)


def probs_with_conf(conf):
    conf = np.asarray(conf, np.float32)
    return jnp.asarray(np.stack([conf, 1 - conf], -1))


def run(name, state, conf, idx, n_active=0, cfg=CFG):
    thr = get_threshold(name)
    valid = jnp.ones((len(idx),), bool)
    return thr.update(state, probs_with_conf(conf), jnp.asarray(idx, jnp.int32), valid,
                      jnp.asarray(n_active), cfg)


def test_registry_has_the_three_and_rejects_unknown():
    assert {"boostmis", "fixed", "none"} <= set(THRESHOLDS)
    with pytest.raises(UserError, match="ssl.threshold"):
        get_threshold("flexmatchh")


def test_fixed_masks_at_095():
    mask, tau, _ = run("fixed", {}, [0.96, 0.94, 0.95, 0.2], [0, 1, 2, 3])
    assert float(tau) == pytest.approx(0.95)
    # conf 0.2 means class 1 has 0.8: below threshold too
    assert mask.tolist() == [True, False, True, False]


def test_none_masks_everything():
    mask, _, _ = run("none", {}, [1.0, 0.99], [0, 1])
    assert not bool(mask.any())


def test_boostmis_formula_matches_paper():
    # tau = a*min(1, Ct/Ct-1) + b*NA/(2K), 2K = 20 here
    assert float(boostmis_tau(50.0, 100.0, 0.0, CFG)) == pytest.approx(0.45)
    assert float(boostmis_tau(200.0, 100.0, 0.0, CFG)) == pytest.approx(0.9)
    assert float(boostmis_tau(100.0, 100.0, 10.0, CFG)) == pytest.approx(0.9 + 0.05 * 10 / 20)
    assert float(boostmis_tau(5.0, 0.0, 0.0, CFG)) == pytest.approx(0.9)  # no previous status: ratio 1


def test_boostmis_memory_counts_confident_samples_over_the_pool():
    thr = get_threshold("boostmis")
    state = thr.init(8, 2, CFG)
    assert float(state["tau"]) == pytest.approx(0.9)
    mask, tau, state = run("boostmis", state, [0.95, 0.95, 0.5, 0.99], [0, 1, 2, 3])
    assert float(tau) == pytest.approx(0.9)
    assert mask.tolist() == [True, True, False, True]
    assert float(state["count"]) == 3
    assert state["memory"].tolist()[:4] == [0, 0, -1, 0]
    # second batch touches other samples: count accumulates over the pool, tau stays at a (ratio >= 1)
    _, _, state = run("boostmis", state, [0.97, 0.97], [4, 5])
    assert float(state["count"]) == 5
    assert float(state["tau"]) == pytest.approx(0.9)
    # samples 0,1,3,4 become unconfident: C drops 5 -> 1, tau drops to a * 1/5 and is clipped to tau_min
    _, _, state = run("boostmis", state, [0.6, 0.6, 0.6, 0.6], [0, 1, 3, 4])
    assert float(state["count"]) == 1
    assert float(state["tau"]) == pytest.approx(0.5)


def test_boostmis_threshold_rises_with_annotations_and_is_clipped():
    thr = get_threshold("boostmis")
    state = thr.init(4, 2, CFG)
    _, _, s1 = run("boostmis", state, [0.99], [0], n_active=10)
    assert float(s1["tau"]) == pytest.approx(0.925)
    _, _, s2 = run("boostmis", state, [0.99], [0], n_active=1000)
    assert float(s2["tau"]) == pytest.approx(0.99)  # tau_max


def test_boostmis_mask_uses_previous_tau_and_smooths():
    cfg = CFG._replace(tau_momentum=0.5)
    thr = get_threshold("boostmis")
    state = thr.init(4, 2, cfg)
    mask, tau, s = run("boostmis", state, [0.91, 0.89], [0, 1], n_active=20, cfg=cfg)
    assert float(tau) == pytest.approx(0.9)          # this batch is filtered by the previous status
    assert mask.tolist() == [True, False]
    assert float(s["tau"]) == pytest.approx(0.5 * 0.9 + 0.5 * 0.95)


def test_invalid_rows_never_enter_memory():
    thr = get_threshold("boostmis")
    state = thr.init(4, 2, CFG)
    mask, _, s = thr.update(state, probs_with_conf([0.99, 0.99]), jnp.asarray([0, 1], jnp.int32),
                            jnp.asarray([True, False]), jnp.asarray(0), CFG)
    assert mask.tolist() == [True, False]
    assert s["memory"].tolist() == [0, -1, -1, -1]


def test_cycle_inputs_remove_labeled_rows_from_memory_and_set_targets():
    import jax

    from boostmis_jax.train import set_cycle_inputs
    thr = get_threshold("boostmis")
    state = {"ssl": {"thr": {**thr.init(6, 2, CFG), "memory": jnp.asarray([0, 1, 1, -1, 0, 1], jnp.int32)},
                     "p_model": jnp.full((2,), 0.5), "p_target": jnp.full((2,), 0.5)},
             "n_active": jnp.zeros((), jnp.int32)}
    labels = np.asarray([0, 1, 1, 1, 0, 1])
    out = set_cycle_inputs(state, np.asarray([1, 2, 4, 5]), labels, 3, 2, jax.devices()[0])
    assert out["ssl"]["thr"]["memory"].tolist() == [0, -1, -1, -1, -1, -1]
    assert out["ssl"]["p_target"].tolist() == pytest.approx([0.25, 0.75])
    assert int(out["n_active"]) == 3
