"""ResNet-18/50 for larger slices (e.g. 224x224). ImageNet stem; BasicBlock / Bottleneck."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from boostmis_jax.models import register_model
from boostmis_jax.models.layers import norm_act


class _Basic(nn.Module):
    out: int
    stride: int
    bn_momentum: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, train):
        norm = lambda act="none", **kw: norm_act(train, self.bn_momentum, self.dtype, act=act, **kw)
        y = nn.Conv(self.out, (3, 3), (self.stride,) * 2, use_bias=False, dtype=self.dtype)(x)
        y = norm("relu")(y)
        y = nn.Conv(self.out, (3, 3), use_bias=False, dtype=self.dtype)(y)
        y = norm(scale_init=nn.initializers.zeros)(y)
        if x.shape[-1] != self.out or self.stride != 1:
            x = nn.Conv(self.out, (1, 1), (self.stride,) * 2, use_bias=False, dtype=self.dtype)(x)
            x = norm()(x)
        return nn.relu(x + y)


class _Bottleneck(nn.Module):
    out: int
    stride: int
    bn_momentum: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, train):
        norm = lambda act="none", **kw: norm_act(train, self.bn_momentum, self.dtype, act=act, **kw)
        y = norm("relu")(nn.Conv(self.out, (1, 1), use_bias=False, dtype=self.dtype)(x))
        y = nn.Conv(self.out, (3, 3), (self.stride,) * 2, use_bias=False, dtype=self.dtype)(y)
        y = norm("relu")(y)
        y = nn.Conv(self.out * 4, (1, 1), use_bias=False, dtype=self.dtype)(y)
        y = norm(scale_init=nn.initializers.zeros)(y)
        if x.shape[-1] != self.out * 4 or self.stride != 1:
            x = norm()(nn.Conv(self.out * 4, (1, 1), (self.stride,) * 2, use_bias=False, dtype=self.dtype)(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    num_classes: int
    stages: tuple[int, ...]
    bottleneck: bool
    bn_momentum: float = 0.99
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        small = min(x.shape[1], x.shape[2]) < 64  # CIFAR-style stem for small slices
        if small:
            x = nn.Conv(64, (3, 3), use_bias=False, dtype=self.dtype)(x)
        else:
            x = nn.Conv(64, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False, dtype=self.dtype)(x)
        x = norm_act(train, self.bn_momentum, self.dtype, act="relu")(x)
        if not small:
            x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
        block = _Bottleneck if self.bottleneck else _Basic
        for s, n in enumerate(self.stages):
            for i in range(n):
                x = block(64 * 2 ** s, 2 if (s > 0 and i == 0) else 1, self.bn_momentum, self.dtype)(x, train)
        emb = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
        return nn.Dense(self.num_classes, dtype=jnp.float32)(emb), emb


@register_model("resnet18")
def _resnet18(*, num_classes: int, bn_momentum: float, dtype: str) -> ResNet:
    return ResNet(num_classes, (2, 2, 2, 2), False, bn_momentum, jnp.dtype(dtype))


@register_model("resnet50")
def _resnet50(*, num_classes: int, bn_momentum: float, dtype: str) -> ResNet:
    return ResNet(num_classes, (3, 4, 6, 3), True, bn_momentum, jnp.dtype(dtype))
