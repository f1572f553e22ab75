"""WideResNet-28-2, as in FixMatch / the BoostMIS release (leaky ReLU 0.1, pre-activation blocks)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from boostmis_jax.models import register_model
from boostmis_jax.models.layers import norm_act


def _norm_act(train: bool, momentum: float, dtype):
    """BatchNorm followed by leaky ReLU 0.1 (the only way the WRN uses BatchNorm)."""
    return norm_act(train, momentum, dtype, act="leaky_relu", slope=0.1)


class _Block(nn.Module):
    out: int
    stride: int
    activate_before_residual: bool
    bn_momentum: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, train: bool):
        equal = x.shape[-1] == self.out and self.stride == 1
        o = _norm_act(train, self.bn_momentum, self.dtype)(x)
        if equal or self.activate_before_residual:
            x = o
        y = nn.Conv(self.out, (3, 3), (self.stride, self.stride), use_bias=False, dtype=self.dtype)(o)
        y = _norm_act(train, self.bn_momentum, self.dtype)(y)
        y = nn.Conv(self.out, (3, 3), use_bias=False, dtype=self.dtype)(y)
        if not equal:
            x = nn.Conv(self.out, (1, 1), (self.stride, self.stride), use_bias=False, dtype=self.dtype)(x)
        return x + y


class WideResNet(nn.Module):
    num_classes: int
    depth: int
    widen: int
    bn_momentum: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, train: bool = False):
        n = (self.depth - 4) // 6
        widths = [16 * self.widen, 32 * self.widen, 64 * self.widen]
        x = nn.Conv(16, (3, 3), use_bias=False, dtype=self.dtype)(x.astype(self.dtype))
        for g, w in enumerate(widths):
            for i in range(n):
                stride = 2 if (g > 0 and i == 0) else 1
                x = _Block(w, stride, g == 0 and i == 0, self.bn_momentum, self.dtype)(x, train)
        x = _norm_act(train, self.bn_momentum, self.dtype)(x)
        emb = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
        logits = nn.Dense(self.num_classes, dtype=jnp.float32)(emb)
        return logits, emb


@register_model("wrn28_2")
def _wrn28_2(*, num_classes: int, bn_momentum: float, dtype: str) -> WideResNet:
    return WideResNet(num_classes=num_classes, depth=28, widen=2, bn_momentum=bn_momentum,
                      dtype=jnp.dtype(dtype))
