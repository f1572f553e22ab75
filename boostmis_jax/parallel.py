"""Mesh, shardings and host-to-device placement.

We write every step as a *global* computation under `jax.jit` with `NamedSharding`s (the path `jax.pmap`
itself now lowers to): batches are sharded on their leading axis over a 1-D `data` mesh, the state is
replicated, and XLA inserts the collectives. BatchNorm statistics, the threshold memory and metrics are
therefore global by construction -- no `axis_name`, no hand-written psum -- and the numbers do not depend on
the device count (up to float reduction order).
"""
from __future__ import annotations

import os
from collections import deque
from typing import Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from boostmis_jax.errors import UserError


def init_distributed(cfg_parallel) -> None:
    """Multi-host through `jax.distributed` only. Config keys win; otherwise the cluster's env vars.

    With no coordinator configured and none in the environment (JAX_COORDINATOR_ADDRESS, SLURM, ...),
    this is a single-process run and nothing happens.
    """
    addr = cfg_parallel.get("coordinator_address", "") or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    nproc = int(cfg_parallel.get("num_processes", 0) or os.environ.get("JAX_NUM_PROCESSES", 0) or 0)
    pid = int(cfg_parallel.get("process_id", -1))
    if pid < 0 and os.environ.get("JAX_PROCESS_ID"):
        pid = int(os.environ["JAX_PROCESS_ID"])
    if not addr and not os.environ.get("SLURM_JOB_ID"):
        return
    if jax.distributed.is_initialized():
        return
    kwargs = {}
    if addr:
        kwargs["coordinator_address"] = addr
    if nproc:
        kwargs["num_processes"] = nproc
    if pid >= 0:
        kwargs["process_id"] = pid
    if jax.default_backend() == "cpu" or os.environ.get("JAX_PLATFORMS", "") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


def make_mesh() -> Mesh:
    """1-D `data` mesh over every device of every process."""
    return Mesh(np.array(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def check_divisible(name: str, size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if size % n:
        raise UserError(f"{name}={size} is not a multiple of the {n} devices; set it to a multiple of {n} "
                        f"(e.g. {max(n, size // n * n)})")


def pad_rows(x: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad the leading axis with zeros to a multiple; mask marks the real rows."""
    n = x.shape[0]
    m = -(-n // multiple) * multiple
    mask = np.zeros((m,), bool)
    mask[:n] = True
    if m == n:
        return x, mask
    pad = np.zeros((m - n,) + x.shape[1:], x.dtype)
    return np.concatenate([x, pad]), mask


def process_slice(global_rows: int) -> slice:
    """This process's contiguous share of a global batch (its devices' rows, in mesh order)."""
    n = jax.process_count()
    per = global_rows // n
    i = jax.process_index()
    return slice(i * per, (i + 1) * per)


def put_global(tree, mesh: Mesh):
    """Place a pytree of *global* host arrays, sharded on axis 0.

    Every process computes the same global batch (indices derive from seed and step), takes its own rows and
    hands them to `jax.make_array_from_process_local_data`, which is the multi-host path (and a plain
    sharded device_put on one process). Scalars/0-d arrays are replicated.
    """
    sh = data_sharded(mesh)
    rep = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        if x.ndim == 0:
            return jax.device_put(x, rep)
        local = x[process_slice(x.shape[0])]
        return jax.make_array_from_process_local_data(sh, local, x.shape)

    return jax.tree.map(put, tree)


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))


def prefetch(make_batch: Callable[[int], dict], steps: range, mesh: Mesh, depth: int = 2) -> Iterator:
    """Yield (step, device batch), with `depth` batches already in flight to the devices.

    Transfers are asynchronous, so assembling and placing step t+1 overlaps step t's compute.
    """
    queue: deque = deque()
    it = iter(steps)
    for s in it:
        queue.append((s, put_global(make_batch(s), mesh)))
        if len(queue) >= depth:
            break
    while queue:
        yield queue.popleft()
        for s in it:
            queue.append((s, put_global(make_batch(s), mesh)))
            break


def is_main_process() -> bool:
    return jax.process_index() == 0
