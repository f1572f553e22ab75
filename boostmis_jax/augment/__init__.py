"""Weak/strong views for FixMatch-style SSL, in jnp so they run inside the jitted, sharded train step."""
from boostmis_jax.augment.features import strong_features, weak_features
from boostmis_jax.augment.image import OPS, OPS_WITH_LEVEL, apply_op, cutout, strong_image, weak_image
from boostmis_jax.augment.views import VIEW_KINDS, make_views, register

__all__ = [
    "OPS",
    "OPS_WITH_LEVEL",
    "VIEW_KINDS",
    "apply_op",
    "cutout",
    "make_views",
    "register",
    "strong_features",
    "strong_image",
    "weak_features",
    "weak_image",
]
