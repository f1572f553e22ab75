"""BoostMIS in JAX/Flax: adaptive pseudo-labeling and informative active annotation."""

__version__ = "0.1.0"
