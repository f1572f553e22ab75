"""Adversarial instability (VAT / LDS) per sample: how much the prediction moves under the worst small
perturbation of the input, found by power iteration on the Hessian of KL(p(x) || p(x + r)) at r = 0.

Power iteration step. Original VAT: g = grad_d KL(p(x) || p(x + xi*d)), d <- g / |g|. For small xi,
g = xi^2 * H d + O(xi^3), i.e. the step is a Hessian-vector product. In float32 the usual xi = 1e-6 cannot be
resolved: x + xi*d rounds back to x for inputs of unit scale (one float32 ulp at 1.0 is 1.2e-7, and a unit
vector over 2048 dims has entries ~2e-8), so the finite difference returns rounding noise. We therefore
compute the xi -> 0 limit exactly when xi < FD_MIN_XI: H d = J^T F J d with J the input Jacobian of the
logits and F = diag(p) - p p^T (the KL Hessian in logit space; the curvature of the logits drops out because
it multiplies q - p = 0). That is one jvp and one transposed jvp on a linearization that also yields the
forward outputs, so no forward is repeated. For xi >= FD_MIN_XI the literal finite-difference gradient is
used.

Radius. The LDS score is read at a radius chosen per pool (`radius_grid`, `calibrate_radius`): the pass
scores every grid radius along d_adv (one forward each, inputs clipped to their valid range) and keeps the
largest at which at most a target share of the candidates' predictions flip. At a radius where half the
predictions flip (the old fixed 2.0 in [0,1] pixel space) the KL saturates and ranks confident rows first.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

FD_MIN_XI = 1e-3
VAT_STREAM = 0  # fold_in stream of the acquisition key used for VAT noise (`random` uses 1)

ApplyFn = Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]


class VatParams(NamedTuple):
    """Static VAT settings: finite-difference radius, adversarial radius, power iterations; `grid` (radii,
    largest first) makes the pool pass score every radius so the scorer can calibrate it per pool (see
    `calibrate_radius`); `clip` the inputs' valid range ((0, 1) for images), None for features."""

    xi: float
    eps: float
    ip: int
    grid: tuple[float, ...] = ()
    clip: tuple[float, float] | None = None


# Radii the pool pass tries when al.vat_eps is unset: top * 4^-j, j = 0..5 (2.0 .. 0.002 for [0,1] images,
# the L2 norm of the whole perturbation), from the old fixed default down to where few predictions flip.
# Each radius costs one forward of the pool; a x2 grid (11 radii) measured the same choice within a factor
# 2 (PneumoniaMNIST, docs/drafts/select.md) at twice the cost.
GRID_STEPS, GRID_FACTOR = 6, 0.25


def radius_grid(top: float, steps: int = GRID_STEPS) -> tuple[float, ...]:
    """Geometric radii top, top/4, ..., largest first."""
    return tuple(float(top) * GRID_FACTOR ** j for j in range(steps))


def calibrate_radius(flips: jax.Array, candidate: jax.Array, target: float) -> tuple[jax.Array, jax.Array]:
    """Index of the largest radius whose prediction-flip rate over `candidate` rows is <= `target` (the
    smallest radius when none is), and the (G,) flip rates. `flips` (N, G) bool, radii largest first."""
    cand = candidate.astype(jnp.float32)
    rates = jnp.sum(flips.astype(jnp.float32) * cand[:, None], 0) / jnp.maximum(jnp.sum(cand), 1.0)
    ok = rates <= target
    g = jnp.where(jnp.any(ok), jnp.argmax(ok), rates.shape[0] - 1)
    return g.astype(jnp.int32), rates


def kl_from_logits(logits_p: jax.Array, logits_q: jax.Array) -> jax.Array:
    """KL(p || q) per row, from logits (float32, exact 0 when the logits are equal)."""
    logp = jax.nn.log_softmax(logits_p.astype(jnp.float32), axis=-1)
    logq = jax.nn.log_softmax(logits_q.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


def normalize_per_sample(d: jax.Array) -> jax.Array:
    """Unit L2 norm over all non-batch dims; rows that are all zero stay zero (no NaN)."""
    axes = tuple(range(1, d.ndim))
    d = d.astype(jnp.float32)
    scale = jnp.max(jnp.abs(d), axis=axes, keepdims=True)  # pre-scale: tiny gradients do not underflow
    d = d / jnp.where(scale > 0, scale, 1.0)
    norm = jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
    return d / jnp.where(norm > 0, norm, 1.0)


def per_row_normal(key: jax.Array, rows: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """N(0, I) noise of `shape` per row from fold_in(key, global row): independent of chunking/sharding."""
    return jax.vmap(lambda r: jax.random.normal(jax.random.fold_in(key, r), shape, jnp.float32))(rows)


def adversarial_direction(apply_fn: ApplyFn, variables: Any, xb: jax.Array, rows: jax.Array, key: jax.Array,
                          params: VatParams) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One chunk: (logits, emb, unit adversarial direction d_adv) by power iteration (see module doc)."""

    def model(z: jax.Array) -> tuple[jax.Array, jax.Array]:
        return apply_fn(variables, z)

    d = normalize_per_sample(per_row_normal(key, rows, xb.shape[1:]))
    if params.xi < FD_MIN_XI:
        (logits, emb), lin = jax.linearize(model, xb)
        lin_t = jax.linear_transpose(lin, xb)
        p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        zero_emb = jnp.zeros_like(emb)
        for _ in range(params.ip):
            jd = lin(d.astype(xb.dtype))[0].astype(jnp.float32)
            fjd = p * (jd - jnp.sum(p * jd, axis=-1, keepdims=True))  # (diag(p) - p p^T) J d
            (hd,) = lin_t((fjd.astype(logits.dtype), zero_emb))
            d = normalize_per_sample(hd)
    else:
        logits, emb = model(xb)
        target = jax.lax.stop_gradient(logits)

        def kl_sum(dd: jax.Array) -> jax.Array:
            return jnp.sum(kl_from_logits(target, model(xb + (params.xi * dd).astype(xb.dtype))[0]))

        for _ in range(params.ip):
            d = normalize_per_sample(jax.grad(kl_sum)(d))
    return logits, emb, d


def perturbed_logits(apply_fn: ApplyFn, variables: Any, xb: jax.Array, d: jax.Array, eps: float,
                     clip: tuple[float, float] | None) -> jax.Array:
    """Logits at x + eps * d, the input clipped to its valid range."""
    z = xb + (eps * d).astype(xb.dtype)
    if clip is not None:
        z = jnp.clip(z, clip[0], clip[1])
    return apply_fn(variables, z)[0]


def forward_and_vat(apply_fn: ApplyFn, variables: Any, xb: jax.Array, rows: jax.Array, key: jax.Array,
                    params: VatParams) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One chunk: (logits, emb, adversarial direction d_adv, LDS score KL(p(x) || p(x + eps*d_adv)))."""
    xb = xb.astype(jnp.float32) if not jnp.issubdtype(xb.dtype, jnp.floating) else xb
    logits, emb, d = adversarial_direction(apply_fn, variables, xb, rows, key, params)
    adv_logits = perturbed_logits(apply_fn, variables, xb, d, params.eps, params.clip)
    return logits, emb, d, kl_from_logits(logits, adv_logits)


def forward_and_vat_grid(apply_fn: ApplyFn, variables: Any, xb: jax.Array, rows: jax.Array, key: jax.Array,
                         params: VatParams) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One chunk on every radius of `params.grid`: (logits, emb, KL (chunk, G), prediction flipped
    (chunk, G))."""
    xb = xb.astype(jnp.float32) if not jnp.issubdtype(xb.dtype, jnp.floating) else xb
    logits, emb, d = adversarial_direction(apply_fn, variables, xb, rows, key, params)
    pred = jnp.argmax(logits, axis=-1)
    kls, flips = [], []
    for eps in params.grid:
        adv = perturbed_logits(apply_fn, variables, xb, d, eps, params.clip)
        kls.append(kl_from_logits(logits, adv))
        flips.append(jnp.argmax(adv, axis=-1) != pred)
    return logits, emb, jnp.stack(kls, 1), jnp.stack(flips, 1)
