"""Losses of the SSL step: supervised CE, masked consistency, distribution alignment."""
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
