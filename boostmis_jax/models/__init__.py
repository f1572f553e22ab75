"""Model registry. Every model maps `(x, train) -> (logits, embedding)`.

The embedding (penultimate features) feeds the density-aware and core-set selectors, so every model must
return it; `train` switches BatchNorm between batch statistics and running averages.
"""
from __future__ import annotations

import inspect
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
    """`MODELS[model.name](num_classes=..., **the model section's keys the factory names)`, big_vision's
    `Model(**config.model)`: a factory's keyword-only signature says what it reads, and its values (with
    their defaults) come from the `model` section of defaults.py, never from the factory."""
    name = cfg_model.name
    if name not in MODELS:
        raise UserError(f"model.name={name!r} is not a known model; choose one of {sorted(MODELS)}")
    fn = MODELS[name]
    wanted = [k for k in inspect.signature(fn).parameters if k != "num_classes"]
    return fn(num_classes=num_classes, **{k: cfg_model[k] for k in wanted})


from boostmis_jax.models import cnn, mlp, resnet, wrn  # noqa: F401  (registration side effects)
