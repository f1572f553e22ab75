"""Losses of the SSL step: supervised CE, masked consistency, distribution alignment, FreeMatch fairness."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def supervised_ce(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def pseudo_targets(probs: jnp.ndarray, *, hard: bool, temperature: float) -> jnp.ndarray:
    """Hard: one-hot argmax of the (aligned) probs. Soft: probs sharpened by 1/T and renormalised."""
    if hard:
        return jax.nn.one_hot(jnp.argmax(probs, -1), probs.shape[-1], dtype=probs.dtype)
    sharp = probs ** (1.0 / temperature)
    return sharp / jnp.sum(sharp, axis=-1, keepdims=True)


def consistency(logits_strong: jnp.ndarray, targets: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Mean over the whole unlabeled batch (masked samples contribute 0), as FixMatch: the mask rate scales it."""
    ce = optax.softmax_cross_entropy(logits_strong, jax.lax.stop_gradient(targets))
    return jnp.sum(ce * mask) / mask.shape[0]


def align_distribution(probs: jnp.ndarray, p_model: jnp.ndarray, p_target: jnp.ndarray) -> jnp.ndarray:
    """ReMixMatch distribution alignment: rescale by target/model class marginals, renormalize."""
    out = probs * (p_target / jnp.maximum(p_model, 1e-6))
    return out / jnp.sum(out, axis=-1, keepdims=True)


def freematch_fairness(probs_strong: jnp.ndarray, mask: jnp.ndarray, p_tilde: jnp.ndarray,
                       label_hist: jnp.ndarray) -> jnp.ndarray:
    """FreeMatch's self-adaptive fairness term (Wang et al. 2023, Eq. 12; USB's `entropy_loss`), to ADD to
    the loss with weight `ssl.fairness_weight`: sum_c SumNorm(p_tilde/h_tilde)_c * log SumNorm(p_bar/h_bar)_c,
    the negative cross-entropy between the EMA class marginal (p_tilde, modulated by the EMA argmax
    histogram label_hist; both from the freematch threshold state after this step's update, no gradient)
    and the mean strong-view probability of the masked rows p_bar modulated by their argmax histogram h_bar
    (no gradient through h_bar). Minimising it pushes the masked predictions to spread over classes.
    The sign is the paper's and USB's (asked and confirmed as intended in microsoft/Semi-supervised-learning
    issue #182). Fixed shapes: `mask` (float or bool, padded rows 0) weights the rows; with no masked row
    it is 0."""
    num_classes = probs_strong.shape[-1]
    m = mask.astype(probs_strong.dtype)
    n = jnp.sum(m)
    safe_n = jnp.maximum(n, 1.0)
    pred = jnp.argmax(probs_strong, axis=-1)
    hist = jnp.sum(jax.nn.one_hot(pred, num_classes, dtype=probs_strong.dtype) * m[:, None], axis=0) / safe_n
    inv = lambda h: jnp.where(h > 0, 1.0 / jnp.where(h > 0, h, 1.0), 0.0)  # 1/h with 1/0 := 0, as USB
    mod_model = jax.lax.stop_gradient(p_tilde * inv(label_hist))
    mod_model = mod_model / jnp.maximum(jnp.sum(mod_model), 1e-12)
    mean_prob = jnp.sum(probs_strong * m[:, None], axis=0) / safe_n
    mod_mean = mean_prob * jax.lax.stop_gradient(inv(hist))
    mod_mean = mod_mean / jnp.maximum(jnp.sum(mod_mean), 1e-12)
    loss = jnp.sum(mod_model * jnp.log(mod_mean + 1e-12))
    return jnp.where(n > 0, loss, 0.0)
