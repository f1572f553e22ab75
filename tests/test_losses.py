"""SSL losses on crafted inputs: pseudo-targets and FreeMatch's fairness term against a reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from boostmis_jax import losses


def test_pseudo_targets_hard_is_one_hot_argmax():
    probs = jnp.asarray([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]], jnp.float32)
    out = losses.pseudo_targets(probs, hard=True, temperature=0.5)
    assert out.tolist() == [[0, 1, 0], [1, 0, 0]]


def test_pseudo_targets_soft_sharpens_by_one_over_t_and_renormalises():
    probs = jnp.asarray([[0.2, 0.6, 0.2]], jnp.float32)
    np.testing.assert_allclose(losses.pseudo_targets(probs, hard=False, temperature=1.0), probs, rtol=1e-6)
    sharp = np.array([0.04, 0.36, 0.04]) / 0.44
    np.testing.assert_allclose(losses.pseudo_targets(probs, hard=False, temperature=0.5), [sharp], rtol=1e-6)
    with pytest.raises(TypeError):
        losses.pseudo_targets(probs, probs, hard=True, temperature=1.0)  # no logits argument any more


def usb_saf(probs_s, mask, p_model, label_hist):
    """USB's FreeMatch `entropy_loss`, transcribed to numpy on probabilities (boolean row selection)."""
    sel = probs_s[mask.astype(bool)]
    hist = np.bincount(sel.argmax(-1), minlength=sel.shape[1]).astype(np.float64)
    hist = hist / hist.sum()
    with np.errstate(divide="ignore"):
        inv_lh = np.where(label_hist > 0, 1 / label_hist, 0.0)
        inv_h = np.where(hist > 0, 1 / np.where(hist > 0, hist, 1), 0.0)
    mod_model = p_model * inv_lh
    mod_model = mod_model / mod_model.sum()
    mod_mean = sel.mean(0) * inv_h
    mod_mean = mod_mean / mod_mean.sum()
    return float(np.sum(mod_model * np.log(mod_mean + 1e-12)))


def crafted(seed=0, n=16, c=4):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, c))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    mask = rng.random(n) < 0.6
    p_model = rng.dirichlet(np.ones(c))
    label_hist = rng.dirichlet(np.ones(c))
    return probs.astype(np.float32), mask, p_model.astype(np.float32), label_hist.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fairness_matches_usb_reference(seed):
    probs, mask, p_model, label_hist = crafted(seed)
    got = losses.freematch_fairness(jnp.asarray(probs), jnp.asarray(mask), jnp.asarray(p_model),
                                    jnp.asarray(label_hist))
    assert float(got) == pytest.approx(usb_saf(probs, mask, p_model, label_hist), rel=1e-5, abs=1e-6)


def test_fairness_with_a_class_missing_from_the_masked_rows():
    # the missing class gets 1/hist := 0, as USB's replace_inf_to_zero
    probs = np.asarray([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.8, 0.1, 0.1]], np.float32)
    mask = np.array([True, True, True])
    p_model = np.array([0.5, 0.3, 0.2], np.float32)
    lh = np.array([0.4, 0.4, 0.2], np.float32)
    got = losses.freematch_fairness(jnp.asarray(probs), jnp.asarray(mask), jnp.asarray(p_model), jnp.asarray(lh))
    assert np.isfinite(float(got))
    assert float(got) == pytest.approx(usb_saf(probs, mask, p_model, lh), rel=1e-5)


def test_fairness_is_zero_with_finite_gradients_when_nothing_is_masked_and_ignores_unmasked_rows():
    probs, mask, p_model, label_hist = crafted(3)
    logits = jnp.log(jnp.asarray(probs))

    def f(lg, m):
        return losses.freematch_fairness(jax.nn.softmax(lg), m, jnp.asarray(p_model), jnp.asarray(label_hist))

    value, grad = jax.value_and_grad(f)(logits, jnp.zeros(len(probs), jnp.float32))
    assert float(value) == 0.0 and np.all(np.isfinite(grad)) and not np.any(grad)
    # rows outside the mask (e.g. padding) neither change the value nor receive gradient
    g = jax.grad(f)(logits, jnp.asarray(mask, jnp.float32))
    assert np.all(np.asarray(g)[~mask] == 0) and np.any(np.asarray(g)[mask])
    other = np.asarray(logits).copy()
    other[~mask] = 0.0
    assert float(f(jnp.asarray(other), jnp.asarray(mask, jnp.float32))) == pytest.approx(
        float(f(logits, jnp.asarray(mask, jnp.float32))), rel=1e-6)


def test_fairness_gradient_flows_through_the_mean_probability_only():
    # p_model/label_hist are state (no gradient); the batch histogram is treated as a constant, as USB
    probs, mask, p_model, label_hist = crafted(4)
    logits = jnp.log(jnp.asarray(probs))
    g_state = jax.grad(lambda pm: losses.freematch_fairness(jax.nn.softmax(logits), jnp.asarray(mask), pm,
                                                            jnp.asarray(label_hist)))(jnp.asarray(p_model))
    assert not np.any(np.asarray(g_state))
