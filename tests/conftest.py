"""Pytest setup: 8 simulated CPU devices so multi-device code paths are exercised without a GPU.

XLA reads the flag once, when the backend starts, so it must be set before jax is imported anywhere.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
