"""Pytest setup: 8 simulated CPU devices so multi-device code paths are exercised without a GPU.

XLA reads the flag once, when the backend starts, so it must be set before jax is imported anywhere.
A persistent compilation cache (inherited by the CLI subprocesses the end-to-end tests start) means each
distinct program is compiled once per test session instead of once per process.
"""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "boostmis_jax_test_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

from boostmis_jax import xla_env  # never imports jax; the XLA defaults users get

xla_env.configure()
