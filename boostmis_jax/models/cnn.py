"""A small VGG-style CNN: fast enough to train BoostMIS on 2 CPU cores, still BatchNorm'd like the WRN."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from boostmis_jax.models import register_model
from boostmis_jax.models.layers import max_pool_2x2, norm_act


class SmallCNN(nn.Module):
    num_classes: int
    widths: tuple[int, ...]
    bn_momentum: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm_relu = lambda: norm_act(train, self.bn_momentum, self.dtype, act="relu")
        x = x.astype(self.dtype)
        for i, w in enumerate(self.widths):
            x = nn.Conv(w, (3, 3), use_bias=False, dtype=self.dtype)(x)
            x = norm_relu()(x)
            x = nn.Conv(w, (3, 3), use_bias=False, dtype=self.dtype)(x)
            x = norm_relu()(x)
            if i < len(self.widths) - 1 and min(x.shape[1], x.shape[2]) >= 4:
                x = max_pool_2x2(x)  # = nn.max_pool(x, (2, 2), strides=(2, 2)), faster gradient
        emb = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
        logits = nn.Dense(self.num_classes, dtype=jnp.float32)(emb)
        return logits, emb


@register_model("cnn")
def _cnn(*, num_classes: int, widths, bn_momentum: float, dtype: str) -> SmallCNN:
    return SmallCNN(num_classes=num_classes, widths=tuple(widths), bn_momentum=bn_momentum,
                    dtype=jnp.dtype(dtype))
