"""The one place that sets XLA/JAX flags for users; call `configure()` before jax starts its backend.

Why: XLA reads XLA_FLAGS once, when the first backend starts, and the XLA:CPU defaults of this jaxlib are
not the fastest for the convolution networks BoostMIS trains (measurements in benchmarks/NOTES.md). Every
entry point (main, study, predict, the benchmarks) calls `configure()` first thing, so a user without a GPU
gets the faster path without knowing any flag.

Rules:
* a flag the user already put in XLA_FLAGS is never overridden (theirs wins, matched by flag name);
* BOOSTMIS_XLA_DEFAULTS=0 turns every default off (for A/B measurements, or to report an XLA bug);
* only `xla_cpu_*` options are set: they change nothing on a GPU, where jax runs the GPU backend.
* this module never imports jax (importing it must not start a backend).
"""
from __future__ import annotations

import os
import re
import sys

# name -> value; each one is measured in benchmarks/NOTES.md ("XLA:CPU flags").
CPU_FLAGS: dict[str, str] = {
    # YNNPACK's convolutions (this jaxlib's default for every convolution) run the weight-gradient
    # convolution -- a window as large as the image, a 3x3 output -- at 13-36 GFLOP/s on this CPU, half the
    # rate of XLA's Eigen convolution for the same op; forward and input-gradient convolutions are on par.
    # Keep YNNPACK for dots and reductions (the BatchNorm statistics: without it they become slow
    # reduce-windows), drop it for convolutions only.
    "xla_cpu_experimental_ynn_fusion_type": "-individual_convolution",
}
OPT_OUT = "BOOSTMIS_XLA_DEFAULTS"


def _names(flags: str) -> set[str]:
    return set(re.findall(r"--([A-Za-z0-9_]+)", flags))


def merged_flags(current: str, defaults: dict[str, str] | None = None) -> str:
    """`current` with each default flag appended unless `current` already names it (the user's wins)."""
    defaults = CPU_FLAGS if defaults is None else defaults
    have = _names(current)
    extra = [f"--{k}={v}" for k, v in defaults.items() if k not in have]
    return " ".join([current.strip()] + extra).strip() if extra else current


def configure(environ: dict | None = None) -> str:
    """Put the project's XLA defaults into XLA_FLAGS (the user's flags kept first, and winning); returns the
    flags in effect. A no-op with BOOSTMIS_XLA_DEFAULTS=0. Called after jax started a backend it cannot
    change anything, so it says so on stderr instead of pretending."""
    env = os.environ if environ is None else environ
    current = env.get("XLA_FLAGS", "")
    if env.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return current
    new = merged_flags(current)
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
