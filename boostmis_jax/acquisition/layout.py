"""Row layouts for chunked pool passes that stay parallel when the pool is sharded along N.

A pool of N = shards * S * size rows sharded in `shards` contiguous pieces is viewed as S steps of
`shards * size` rows, step s taking rows s*size..(s+1)*size-1 of EVERY shard. Looping (lax.map/scan) over
steps then never loops over the sharded axis, so each device works on its own rows and nothing is gathered.
With shards == 1 this is the plain (N // size, size) chunking. Per-row results are layout independent.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def infer_shards(x: jax.Array, size: int) -> int:
    """Contiguous pieces the leading axis of a concrete array is split into (1 if unknown or unusable)."""
    n = x.shape[0]
    shards = 1
    sharding = getattr(x, "sharding", None)
    if sharding is not None and not isinstance(x, jax.core.Tracer):
        try:
            shards = max(1, n // sharding.shard_shape(x.shape)[0])
        except (AttributeError, TypeError, ValueError, ZeroDivisionError):
            shards = 1
    if n % (shards * size) != 0:
        shards = 1
    return shards


def to_steps(a: jax.Array, shards: int, size: int) -> jax.Array:
    """(N, ...) -> (S, shards*size, ...), see module docstring."""
    n = a.shape[0]
    steps = n // (shards * size)
    a = a.reshape((shards, steps, size) + a.shape[1:])
    a = jnp.swapaxes(a, 0, 1)
    return a.reshape((steps, shards * size) + a.shape[3:])


def from_steps(a: jax.Array, shards: int, size: int) -> jax.Array:
    """Inverse of `to_steps`: (S, shards*size, ...) -> (N, ...)."""
    steps = a.shape[0]
    a = a.reshape((steps, shards, size) + a.shape[2:])
    a = jnp.swapaxes(a, 0, 1)
    return a.reshape((shards * steps * size,) + a.shape[3:])


def row_sharding(x: jax.Array, shards: int) -> NamedSharding | None:
    """The 1-D NamedSharding of x's leading axis when the step layout uses it (shards > 1), else None."""
    sharding = getattr(x, "sharding", None)
    if shards > 1 and isinstance(sharding, NamedSharding) and len(sharding.spec) > 0 \
            and sharding.spec[0] is not None:
        return NamedSharding(sharding.mesh, P(sharding.spec[0]))
    return None


def constrain_rows(a: jax.Array, rows: NamedSharding | None, dim: int = 0) -> jax.Array:
    """Pin axis `dim` of `a` to the row sharding. Without it GSPMD may replicate per-step work that mixes
    sharded data with replicated index arithmetic (row ids), doing every device's rows on every device."""
    if rows is None:
        return a
    spec = [None] * a.ndim
    spec[dim] = rows.spec[0]
    return jax.lax.with_sharding_constraint(a, NamedSharding(rows.mesh, P(*spec)))
