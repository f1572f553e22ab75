"""Shared defaults (see boostmis_jax/defaults.py for every key and its meaning)."""
from boostmis_jax.defaults import get_config  # noqa: F401
