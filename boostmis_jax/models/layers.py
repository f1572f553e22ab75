"""BatchNorm with its activation fused and a hand-written backward pass: fewer passes over the activations.

Why: on XLA:CPU a convolution network's BatchNorm + activation costs about a third as much as its
convolutions (benchmarks/NOTES.md). Autodiff of flax.linen.BatchNorm followed by leaky_relu materialises
x - mean, the normalised tensor and the activation mask for the backward pass and reads them back in
separate fusions. Here the training-mode forward reads x once for the statistics and once for
`act(x * a + b)`; the backward reads (x, g) once for the two per-channel sums and once for dx, recomputing
the normalised value from x instead of storing it. Same parameters ('scale', 'bias'), same batch
statistics ('mean', 'var'), same update rule and the same numbers (to float32 rounding) as
flax.linen.BatchNorm with use_fast_variance=True, so checkpoints and exported models are unchanged.

Mixed precision: statistics, the per-channel affine and the parameter gradients are float32 whatever the
input dtype; the output (and dx) have the input's dtype (bfloat16 under model.dtype=bfloat16).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTS = ("none", "relu", "leaky_relu")


def _act(z: jax.Array, act: str, slope: float) -> jax.Array:
    if act == "relu":
        return jnp.maximum(z, 0.0)
    if act == "leaky_relu":
        return jnp.where(z >= 0, z, slope * z)
    return z


def _act_grad(z: jax.Array, g: jax.Array, act: str, slope: float) -> jax.Array:
    if act == "relu":
        return jnp.where(z > 0, g, 0.0)
    if act == "leaky_relu":
        return jnp.where(z >= 0, g, slope * g)
    return g


def batch_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance (E[x^2] - E[x]^2, clipped at 0, as flax's fast variance), f32."""
    axes = tuple(range(x.ndim - 1))
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axes)
    var = jnp.maximum(jnp.mean(jnp.square(xf), axes) - jnp.square(mean), 0.0)
    return mean, var


def _affine(mean, var, scale, bias, eps):
    inv = jax.lax.rsqrt(var + eps)
    a = scale * inv
    return a, bias - mean * a, inv


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def bn_act_train(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float, act: str,
                 slope: float) -> jax.Array:
    """act(BatchNorm(x)) with batch statistics; gradients for x, scale and bias (statistics not outputs)."""
    return _bn_fwd(x, scale, bias, eps, act, slope)[0]


def _bn_fwd(x, scale, bias, eps, act, slope):
    mean, var = batch_stats(x)
    a, b, inv = _affine(mean, var, scale, bias, eps)
    y = _act(x.astype(jnp.float32) * a + b, act, slope).astype(x.dtype)
    return y, (x, scale, bias, mean, inv)


def _bn_bwd(eps, act, slope, res, g):
    x, scale, bias, mean, inv = res
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    xf = x.astype(jnp.float32)
    a = scale * inv
    z = xf * a + (bias - mean * a)
    gz = _act_grad(z, g.astype(jnp.float32), act, slope)
    xhat = (xf - mean) * inv
    dbias = jnp.sum(gz, axes)
    dscale = jnp.sum(gz * xhat, axes)
    dx = a * (gz - dbias / n - xhat * (dscale / n))
    return dx.astype(x.dtype), dscale, dbias


bn_act_train.defvjp(_bn_fwd, _bn_bwd)


class BatchNorm(nn.Module):
    """flax.linen.BatchNorm's interface (subset) and variables, plus `act` applied after it, fused.

    act: "none" | "relu" | "leaky_relu" (negative slope `slope`)."""

    use_running_average: bool
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    act: str = "none"
    slope: float = 0.01
    scale_init: Callable = nn.initializers.ones
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.act not in ACTS:
            raise ValueError(f"BatchNorm act={self.act!r}; choose one of {ACTS}")
        c = x.shape[-1]
        scale = self.param("scale", self.scale_init, (c,), jnp.float32)
        bias = self.param("bias", self.bias_init, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        x = x.astype(self.dtype)
        if self.use_running_average:
            a, b, _ = _affine(ra_mean.value, ra_var.value, scale, bias, self.epsilon)
            return _act(x.astype(jnp.float32) * a + b, self.act, self.slope).astype(self.dtype)
        if not self.is_initializing():
            # the same reductions as inside bn_act_train: XLA computes them once
            mean, var = jax.lax.stop_gradient(batch_stats(x))
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
            ra_var.value = m * ra_var.value + (1.0 - m) * var
        return bn_act_train(x, scale, bias, float(self.epsilon), self.act, float(self.slope))


# The models' BatchNorm: fused (this module). False gives flax.linen.BatchNorm + the activation, the reference
# the tests compare against (same variables, same numbers).
FUSED_DEFAULT = True


def norm_act(train: bool, momentum: float, dtype, act: str = "none", slope: float = 0.01,
             fused: bool | None = None, **kw) -> Callable[[jax.Array], jax.Array]:
    """BatchNorm then `act`: the fused module, or flax.linen.BatchNorm and the activation (fused=False),
    with the same variables either way."""
    fused = FUSED_DEFAULT if fused is None else fused
    if fused:
        return BatchNorm(use_running_average=not train, momentum=momentum, dtype=dtype, act=act, slope=slope, **kw)
    bn = nn.BatchNorm(use_running_average=not train, momentum=momentum, dtype=dtype, **kw)
    return lambda v: _act(bn(v), act, slope)


# ---------------------------------------------------------------------------------------- 2x2 max pooling
def _windows(x: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N, H//2, 2, W//2, 2, C), an odd last row/column dropped (VALID pooling)."""
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)


def _first_max(xw: jax.Array, y: jax.Array) -> jax.Array:
    """Boolean mask of each window's first maximum in row-major order (select-and-scatter's pick)."""
    yb = y[:, :, None, :, None, :]
    taken = jnp.zeros(yb.shape, bool)
    rows = []
    for a in range(2):
        cols = []
        for b in range(2):
            hit = (xw[:, :, a:a + 1, :, b:b + 1, :] == yb) & ~taken
            taken = taken | hit
            cols.append(hit)
        rows.append(jnp.concatenate(cols, axis=4))
    return jnp.concatenate(rows, axis=2)


@jax.custom_jvp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """flax.linen.max_pool(x, (2, 2), strides=(2, 2)) (VALID), NHWC, with the same derivatives.

    Why: XLA:CPU runs reduce_window-max's gradient (select-and-scatter) as a variadic arg-max reduce-window
    plus a scatter, 10-25x slower than this. Here the tangent is the input tangent at each window's first
    maximum in row-major order -- the element select-and-scatter picks, so gradients are identical, ties
    included -- and its transpose (the gradient) is one elementwise select. A custom_jvp, not a custom_vjp:
    VAT linearizes the eval-mode model (forward mode) and transposes it."""
    return jnp.max(_windows(x), axis=(2, 4))


@max_pool_2x2.defjvp
def _max_pool_2x2_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    xw = _windows(x)
    y = jnp.max(xw, axis=(2, 4))
    mask = jax.lax.stop_gradient(_first_max(xw, y))
    return y, jnp.sum(jnp.where(mask, _windows(t), jnp.zeros((), t.dtype)), axis=(2, 4))
