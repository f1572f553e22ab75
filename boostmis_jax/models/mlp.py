"""MLP head for precomputed feature vectors (the MESCC release ships ResNet-50 features, 2048-d)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from boostmis_jax.models import register_model
from boostmis_jax.models.layers import norm_act


class MLP(nn.Module):
    num_classes: int
    hidden: tuple[int, ...]
    bn_momentum: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)
        for h in self.hidden:
            x = nn.Dense(h, dtype=self.dtype)(x)
            x = norm_act(train, self.bn_momentum, self.dtype, act="relu")(x)
        emb = x.astype(jnp.float32)
        logits = nn.Dense(self.num_classes, dtype=jnp.float32)(emb)
        return logits, emb


@register_model("mlp")
def _mlp(*, num_classes: int, hidden, bn_momentum: float, dtype: str) -> MLP:
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    return MLP(num_classes=num_classes, hidden=hidden, bn_momentum=bn_momentum, dtype=jnp.dtype(dtype))
