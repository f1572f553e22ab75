"""Data-parallel scaling of the full BoostMIS SSL train step: images/s vs device count.

The step is one global jitted computation over a 1-D `data` mesh (batch sharded on axis 0, state replicated;
see boostmis_jax/parallel.py), so the same global batch runs on 1..N devices and only the speed changes.

  * GPU/accelerator: every power of two up to `jax.device_count()`, in this process (meshes over the first
    n devices).
  * CPU: 1, 2, 4, 8 *simulated* devices, each count in a fresh subprocess (XLA fixes the count when the
    backend starts). Simulated devices share the host's cores, so CPU "speedup" measures what sharding and
    the cross-device reductions cost, not real scaling; run on GPUs for that.

    python benchmarks/scaling.py                               # CPU: cnn, 28x28x1, B=16, uratio 7
    python benchmarks/scaling.py --model wrn28_2 --batch 64 --image-size 32 --channels 3   # on GPUs
    python benchmarks/scaling.py --devices 1,4                 # just these counts

One JSON line per device count on stdout: devices, backend, model, batch (global labeled), images_per_step
(B + 2*uratio*B), img_per_s, img_per_s_per_device, speedup_vs_1 (vs the 1-device line of this run), plus
step_ms (median of timed steps, each ended by block_until_ready), compile_s and device.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NUM_CLASSES = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cnn", help="model registry name (cnn | wrn28_2 | resnet18 | ...)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="model.dtype")
    p.add_argument("--batch", type=int, default=None, help="GLOBAL labeled batch B (default 16 CPU, 64 GPU)")
    p.add_argument("--uratio", type=int, default=7, help="unlabeled batch = uratio * B")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 5 CPU, 30 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps after compiling (default 1 CPU, 5 GPU)")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--widths", default="", help="cnn widths, comma list (default: the config's)")
    p.add_argument("--devices", default="", help="comma list of device counts (default 1,2,4,8 on CPU; powers "
                                                 "of two up to the device count otherwise)")
    p.add_argument("--backend", default="auto", choices=["auto", "cpu"],
                   help="cpu: simulated CPU devices even where an accelerator exists")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # internal: one CPU count
    return p.parse_args(argv)


def _defaults(a: argparse.Namespace, gpu: bool) -> argparse.Namespace:
    a.batch = a.batch or (64 if gpu else 16)
    a.steps = a.steps or (30 if gpu else 5)
    a.warmup = a.warmup if a.warmup is not None else (5 if gpu else 1)
    return a


def measure(a: argparse.Namespace, devices) -> dict:
    """Compile and time the SSL step on a mesh over `devices`; one result row (no speedup yet)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from boostmis_jax import parallel
    from boostmis_jax.defaults import get_config
    from boostmis_jax.models import build_model
    from boostmis_jax.train import build_training, fresh_state

    mesh = parallel.make_mesh(devices)
    n = mesh.devices.size
    B, uB = a.batch, a.uratio * a.batch
    parallel.check_divisible("--batch", B, mesh)
    cfg = get_config()
    cfg.model.name, cfg.model.dtype = a.model, a.dtype
    cfg.train.batch_size, cfg.ssl.uratio = B, a.uratio
    if a.widths:
        cfg.model.widths = tuple(int(w) for w in a.widths.split(","))
    model = build_model(cfg.model, NUM_CLASSES)
    num_train = max(4 * uB, 1024)
    shape = (a.image_size, a.image_size, a.channels)
    rep = parallel.replicated(mesh)
    sample = jnp.zeros((1,) + shape, jnp.float32)
    training = build_training(cfg, model, kind="image", mean=(0.5,) * a.channels, std=(0.25,) * a.channels,
                              num_train=num_train, num_classes=NUM_CLASSES)
    state = fresh_state(training.init, sample, rep)
    rng = np.random.default_rng(0)
    batch = parallel.put_global({
        "xl": rng.integers(0, 256, (B,) + shape, dtype=np.uint8),
        "yl": rng.integers(0, NUM_CLASSES, B).astype(np.int32),
        "xu": rng.integers(0, 256, (uB,) + shape, dtype=np.uint8),
        "iu": rng.choice(num_train, uB, replace=False).astype(np.int32),
        "yu": rng.integers(0, NUM_CLASSES, uB).astype(np.int32)}, mesh)
    step = jax.jit(training.step, out_shardings=(rep, rep), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(a.warmup):
        state, m = compiled(state, batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        state, m = compiled(state, batch)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    images = B + 2 * uB
    dev = mesh.devices.flat[0]
    return {"devices": n, "backend": dev.platform, "model": a.model, "dtype": a.dtype, "batch": B,
            "uratio": a.uratio, "images_per_step": images, "img_per_s": round(images / step_s, 2),
            "img_per_s_per_device": round(images / step_s / n, 2), "speedup_vs_1": None,
            "step_ms": round(1e3 * step_s, 3), "compile_s": round(compile_s, 2), "steps": a.steps,
            "device": f"{dev.device_kind} x{n}", "loss": float(m["loss"])}


def _with_speedup(row: dict, base: dict | None) -> dict:
    if base is not None and "img_per_s" in row:
        row["speedup_vs_1"] = round(row["img_per_s"] / base["img_per_s"], 3)
    return row


def _counts(spec: str, limit: int | None) -> list[int]:
    if spec:
        return [int(c) for c in spec.split(",") if c.strip()]
    out, c = [], 1
    while c <= (limit or 8):
        out.append(c)
        c *= 2
    return out


def _cpu_worker_env(n: int) -> dict:
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", "")).strip()
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _forward_args(argv: list[str]) -> list[str]:
    """The user's flags minus --devices/--backend (the parent's business)."""
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
            continue
        if tok in ("--devices", "--backend"):
            skip = True
            continue
        if tok.startswith(("--devices=", "--backend=")):
            continue
        out.append(tok)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    if a.worker:  # one simulated CPU device count, already fixed by XLA_FLAGS in our environment
        import jax
        _defaults(a, gpu=False)
        print(json.dumps(measure(a, jax.devices()[:a.worker])), flush=True)
        return 0
    if a.backend == "auto":
        import jax
        gpu = jax.default_backend() != "cpu"
    else:
        gpu = False
    _defaults(a, gpu)
    base = None
    if gpu:
        import jax
        devs = jax.devices()
        for n in _counts(a.devices, len(devs)):
            if n > len(devs) or a.batch % n:
                print(json.dumps({"devices": n, "skipped": f"needs {n} devices and --batch divisible by {n}"}))
                continue
            row = measure(a, devs[:n])
            base = base or (row if n == 1 else None)
            row = _with_speedup(row, base)
            print(json.dumps(row), flush=True)
        return 0
    for n in _counts(a.devices, None):
        if a.batch % n:
            print(json.dumps({"devices": n, "skipped": f"--batch {a.batch} is not divisible by {n}"}), flush=True)
            continue
        cmd = [sys.executable, str(Path(__file__).resolve()), *_forward_args(argv), f"--worker={n}"]
        p = subprocess.run(cmd, cwd=ROOT, env=_cpu_worker_env(n), capture_output=True, text=True, check=False)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode or not lines:
            err = (p.stderr.strip().splitlines() or ["no output"])[-1]
            print(json.dumps({"devices": n, "error": err[:300]}), flush=True)
            continue
        row = json.loads(lines[-1])
        base = base or (row if n == 1 else None)
        row = _with_speedup(row, base)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
