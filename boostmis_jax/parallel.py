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
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from boostmis_jax.errors import UserError


def init_distributed(*, coordinator_address: str, num_processes: int, process_id: int) -> None:
    """Multi-host through `jax.distributed` only. Config keys win; otherwise the cluster's env vars.

    With no coordinator configured and none in the environment (JAX_COORDINATOR_ADDRESS, SLURM, ...),
    this is a single-process run and nothing happens. Must run before anything touches a device:
    `jax.distributed.initialize` refuses to start once a backend exists, so nothing here may ask
    `jax.default_backend()` or `jax.devices()`.
    """
    addr = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    nproc = int(num_processes or os.environ.get("JAX_NUM_PROCESSES", "0") or 0)
    pid = int(process_id)
    if pid < 0 and os.environ.get("JAX_PROCESS_ID"):
        pid = int(os.environ["JAX_PROCESS_ID"])
    if not addr and not os.environ.get("SLURM_JOB_ID"):
        return
    if jax.distributed.is_initialized():
        return
    if addr and nproc > 1 and pid < 0:
        raise UserError(f"parallel.coordinator_address={addr!r} with parallel.num_processes={nproc} but no "
                        "parallel.process_id; pass --config.parallel.process_id=0..N-1 (or set JAX_PROCESS_ID)")
    if nproc and pid >= nproc:
        raise UserError(f"parallel.process_id={pid} is not below parallel.num_processes={nproc}; number the "
                        f"processes 0..{nproc - 1}")
    kwargs = {}
    if addr:
        kwargs["coordinator_address"] = addr
    if nproc:
        kwargs["num_processes"] = nproc
    if pid >= 0:
        kwargs["process_id"] = pid
    _use_cpu_collectives()
    jax.distributed.initialize(**kwargs)
    # Open the collectives context now, while `initialize` has just lined all processes up: gloo gives the
    # first collective only ~30 s for every process to arrive, and later first collectives (orbax setup,
    # the split broadcast) follow uneven per-process work that a loaded machine can stretch past that.
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("boostmis_jax:init")


def _use_cpu_collectives() -> None:
    """CPU processes need a cross-process collectives backend (gloo over TCP) for their all-reduces.

    jax >= 0.5 already defaults `jax_cpu_collectives_implementation` to gloo; older or customised
    installs may leave it unset, in which case a multi-process CPU run fails at its first psum. The
    flag only affects the CPU client, so setting it is harmless on GPU. An explicit choice (e.g. mpi via
    JAX_CPU_COLLECTIVES_IMPLEMENTATION) is kept.
    """
    name = "jax_cpu_collectives_implementation"
    try:
        if not getattr(jax.config, name):
            jax.config.update(name, "gloo")
    except AttributeError:  # a jax without the flag: nothing to configure
        pass


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """1-D `data` mesh over `devices` (default: every device of every process, in `jax.devices()` order,
    which groups each process's devices together)."""
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise UserError("parallel: no devices to build a mesh over; check JAX_PLATFORMS / the accelerator setup")
    return Mesh(np.array(devs), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    """State, metrics and eval outputs: one full copy per device, readable on every process."""
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Batches: axis 0 split in contiguous blocks over the `data` axis."""
    return NamedSharding(mesh, P("data"))


def check_divisible(name: str, size: int, mesh: Mesh) -> None:
    """A global batch must split evenly over the devices (equal shards, one compiled shape)."""
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


def process_slice(global_rows: int, mesh: Mesh | None = None) -> slice:
    """This process's contiguous share of a global batch: the rows its devices hold under `data_sharded`.

    Derived from the sharding itself (not from process_index * rows / process_count), so it stays right
    whatever order the mesh lists devices in; a process whose devices are not adjacent in the mesh has no
    contiguous share, which we report instead of silently mis-placing rows.
    """
    if mesh is None:
        n = jax.process_count()
        per = global_rows // n
        i = jax.process_index()
        return slice(i * per, (i + 1) * per)
    idx = data_sharded(mesh).addressable_devices_indices_map((global_rows,))
    spans = sorted({(sl[0].start or 0, global_rows if sl[0].stop is None else sl[0].stop) for sl in idx.values()})
    for (_, stop), (start, _) in pairwise(spans):
        if start != stop:
            raise UserError(f"parallel: this process's devices hold non-adjacent rows {spans} of the batch; "
                            "build the mesh with parallel.make_mesh() so each process's devices are adjacent")
    return slice(spans[0][0], spans[-1][1]) if spans else slice(0, 0)


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
        check_divisible("batch rows", x.shape[0], mesh)
        local = x[process_slice(x.shape[0], mesh)]
        return jax.make_array_from_process_local_data(sh, local, x.shape)

    return jax.tree.map(put, tree)


def replicate(tree, mesh: Mesh):
    """Replicate a pytree that is identical on every process (e.g. freshly built state)."""
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


def to_host(tree):
    """Device arrays -> numpy, including arrays sharded over devices of *other* processes.

    `np.asarray` cannot read rows that live on another host; those arrays are all-gathered first
    (`process_allgather`, a collective: every process must call this in the same order, as the loop does).
    Replicated and single-process arrays are read directly; anything else passes through `np.asarray`.
    """
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(get, tree)


def is_main_process() -> bool:
    """Process 0 alone writes files (metrics, summary, split) in a shared workdir."""
    return jax.process_index() == 0


# ======================================================================================================
# Multi-process agreement: every process takes the same decision at the same step
# ======================================================================================================
def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on any. A signal must be acted on by all processes at
    the same step: one process alone saving (orbax needs all of them) while the others enter the next
    step's collectives would deadlock a multi-host run."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils
    return bool(np.max(multihost_utils.process_allgather(np.int32(bool(flag)))))


def on_process0(fn: Callable[[], object]):
    """Run `fn` on process 0 only and tell every process whether it raised a UserError, so a bad input that
    only process 0 reads (split file, filled-in query CSV) stops all processes with the same one line
    instead of leaving the others waiting in the next collective."""
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils
    out, err = None, None
    if is_main_process():
        try:
            out = fn()
        except UserError as e:
            err = e
    failed = np.asarray(multihost_utils.broadcast_one_to_all(np.int32(err is not None)))
    if int(failed):
        raise err if err is not None else UserError("process 0 stopped on bad input (its log has the line); "
                                                    "fix it and re-run all processes")
    return out


def broadcast_rows(rows: np.ndarray | None, n: int) -> np.ndarray:
    """Process 0's set of row indices (e.g. the initial labeled split) on every process."""
    if jax.process_count() == 1:
        return np.asarray(rows)
    from jax.experimental import multihost_utils
    mask = np.zeros((n,), np.int32)
    if rows is not None:
        mask[rows] = 1
    return np.flatnonzero(np.asarray(multihost_utils.broadcast_one_to_all(mask)))


def broadcast_answers(answers: dict | None, indices: Sequence[int]) -> dict | None:
    """Process 0's oracle answers {row: label} (or None: still waiting for a person) on every process."""
    if jax.process_count() == 1:
        return answers
    from jax.experimental import multihost_utils
    arr = np.zeros((len(indices) + 1,), np.int32)  # [answered?, label of each query]
    if answers is not None:
        arr[0] = 1
        arr[1:] = [answers[i] for i in indices]
    arr = np.asarray(multihost_utils.broadcast_one_to_all(arr))
    if not arr[0]:
        return None
    return {int(i): int(a) for i, a in zip(indices, arr[1:], strict=True)}
