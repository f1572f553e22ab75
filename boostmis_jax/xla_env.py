"""The one place that sets XLA/JAX flags for users; call `configure()` before jax starts its backend.

Why: XLA reads XLA_FLAGS once, when the first backend starts, and the XLA:CPU defaults of this jaxlib are
not the fastest for the convolution networks BoostMIS trains (measurements in benchmarks/NOTES.md). Every
entry point (main, study, predict, the benchmarks) calls `configure()` first thing, so a user without a GPU
gets the faster path without knowing any flag.

Rules:
* a flag the user already put in XLA_FLAGS is never overridden (theirs wins, matched by flag name);
* BOOSTMIS_XLA_DEFAULTS=0 turns every default off (for A/B measurements, or to report an XLA bug);
* `xla_cpu_*` options change nothing on a GPU, where jax runs the GPU backend; an option every backend
  reads (CPU_ONLY_FLAGS) is set only when jax can run nothing but XLA:CPU (`cpu_only`: JAX_PLATFORMS=cpu,
  or no GPU/TPU plugin installed), so a GPU or TPU run keeps XLA's own defaults;
* a flag is set only when the installed jaxlib knows it (XLA aborts on an unknown flag, and
  pyproject allows older jaxlibs than the one measured): its name is looked up in jaxlib's libraries;
* this module never imports jax (importing it must not start a backend).
"""
from __future__ import annotations

import functools
import importlib.util
import mmap
import os
import re
import sys
from pathlib import Path

# name -> value; each one is measured in benchmarks/NOTES.md ("XLA:CPU flags").
CPU_FLAGS: dict[str, str] = {
    # YNNPACK's convolutions (this jaxlib's default for every convolution) run the weight-gradient
    # convolution -- a window as large as the image, a 3x3 output -- at 13-36 GFLOP/s on this CPU, half the
    # rate of XLA's Eigen convolution for the same op; forward and input-gradient convolutions are on par.
    # Keep YNNPACK for dots and reductions (the BatchNorm statistics: without it they become slow
    # reduce-windows), drop it for convolutions only.
    "xla_cpu_experimental_ynn_fusion_type": "-individual_convolution",
}
# name -> value; set only when `cpu_only()`: every backend reads these (measured in benchmarks/NOTES.md).
CPU_ONLY_FLAGS: dict[str, str] = {
    # LLVM -O1 instead of XLA's -O3 for the loops XLA:CPU emits itself (fusions, reductions, the kNN
    # blocks; convolutions and dots are library calls either way). Measured (NOTES, attempt 10): the pool
    # scorer runs 1.6-2.2x faster at -O1 and compiles faster; the training step is the same within noise;
    # level 0 makes the scorer 20x slower. Not profiled why -O3 loses here.
    "xla_backend_optimization_level": "1",
}
OPT_OUT = "BOOSTMIS_XLA_DEFAULTS"


def _names(flags: str) -> set[str]:
    return set(re.findall(r"--([A-Za-z0-9_]+)", flags))


@functools.cache
def jaxlib_knows(flag: str) -> bool:
    """Whether the installed jaxlib's native libraries contain the flag's name (without importing jaxlib)."""
    spec = importlib.util.find_spec("jaxlib")
    needle = flag.encode()
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for lib in sorted(Path(folder).glob("*.so*")):
            try:
                with open(lib, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
                    if m.find(needle) >= 0:
                        return True
            except (OSError, ValueError):  # empty or unreadable file
                continue
    return False


def _accelerator_plugin_installed() -> bool:
    """A GPU/TPU PJRT plugin jax would load (the `jax_plugins` namespace or entry points, libtpu, or an old
    jaxlib with CUDA/ROCm built in), found without importing jax."""
    from importlib import metadata

    spec = importlib.util.find_spec("jax_plugins")
    folders = list(spec.submodule_search_locations or []) if spec else []
    if any(p.name[:1] not in "._" for f in folders if Path(f).is_dir() for p in Path(f).iterdir()):
        return True
    try:
        plugins = metadata.entry_points(group="jax_plugins")
    except Exception:  # noqa: BLE001  a broken distribution's metadata must not stop a run
        plugins = ()
    if plugins:
        return True
    if importlib.util.find_spec("libtpu") is not None:
        return True
    jaxlib = importlib.util.find_spec("jaxlib")
    folders = list(jaxlib.submodule_search_locations or []) if jaxlib else []
    return any((Path(f) / sub).is_dir() for f in folders for sub in ("cuda", "rocm"))


def cpu_only(environ: dict | None = None) -> bool:
    """Whether jax can run nothing but XLA:CPU here: JAX_PLATFORMS names only cpu, or, unset, no
    accelerator plugin is installed."""
    env = os.environ if environ is None else environ
    platforms = [p.strip().lower() for p in env.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return all(p == "cpu" for p in platforms)
    return not _accelerator_plugin_installed()


def merged_flags(current: str, defaults: dict[str, str] | None = None) -> str:
    """`current` with each default flag appended unless `current` already names it (the user's wins) or
    the installed jaxlib does not know it."""
    defaults = CPU_FLAGS if defaults is None else defaults
    have = _names(current)
    extra = [f"--{k}={v}" for k, v in defaults.items() if k not in have and jaxlib_knows(k)]
    return " ".join([current.strip()] + extra).strip() if extra else current


def configure(environ: dict | None = None) -> str:
    """Put the project's XLA defaults into XLA_FLAGS (the user's flags kept first, and winning); returns the
    flags in effect. A no-op with BOOSTMIS_XLA_DEFAULTS=0. Called after jax started a backend it cannot
    change anything, so it says so on stderr instead of pretending."""
    env = os.environ if environ is None else environ
    current = env.get("XLA_FLAGS", "")
    if env.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return current
    new = merged_flags(current, {**CPU_FLAGS, **(CPU_ONLY_FLAGS if cpu_only(env) else {})})
    if new != current:
        if environ is None and _backend_started():
            print("boostmis_jax.xla_env: jax already started its backend; XLA defaults not applied "
                  "(call configure() before using jax)", file=sys.stderr)
            return current
        env["XLA_FLAGS"] = new
    return new


def _backend_started() -> bool:
    """Whether jax has initialised a backend in this process (then XLA_FLAGS is no longer read)."""
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(xb is not None and getattr(xb, "_backends", None))


def prepare_process() -> None:
    """What every CLI entry point sets before jax starts: quiet C++ logs, the persistent compilation cache
    (a resumed or repeated run skips the tens of seconds of compiling the same step), the XLA defaults."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "boostmis_jax", "xla"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    configure()
