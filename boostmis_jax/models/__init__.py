"""Model registry. Every model maps `(x, train) -> (logits, embedding)`.

The embedding (penultimate features) feeds the density-aware and core-set selectors, so every model must
return it; `train` switches BatchNorm between batch statistics and running averages.
"""
from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from boostmis_jax.errors import UserError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def deco(fn):
        MODELS[name] = fn
        return fn
    return deco


def build_model(cfg_model, num_classes: int) -> nn.Module:
    """Instantiate `cfg_model.name` from the registry with the config's hyper-parameters."""
    name = cfg_model.name
    if name not in MODELS:
        raise UserError(f"model.name={name!r} is not a known model; choose one of {sorted(MODELS)}")
    return MODELS[name](cfg_model, num_classes)


from boostmis_jax.models import cnn, mlp, resnet, wrn  # noqa: F401  (registration side effects)
