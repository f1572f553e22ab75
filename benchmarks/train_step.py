"""Images/s of the full BoostMIS SSL step vs. a bare supervised step of the same total batch.

Why: the SSL step (weak+strong augmentation on device, one forward over [labeled | weak | strong], adaptive
threshold, masked consistency, update, EMA) should cost little more than the network itself. Both steps
process B + 2*uratio*B images, so `ratio = ssl_img_per_s / bare_img_per_s` is exactly what the SSL machinery
costs (goal: >= 0.85).

Both are jitted with donate_argnums=0 over the 1-D data mesh of `boostmis_jax.parallel`, so the same script
runs on 1 or N CPU devices or a GPU. Timed steps alternate SSL/bare so that background load hits both alike;
the reported times are medians, and `ratio_paired` is the median of the per-iteration bare/ssl time ratios
(steadier than `ratio` on a loaded machine).

    python benchmarks/train_step.py                        # CPU default: cnn, 28x28x1, B=16, uratio 7
    python benchmarks/train_step.py --model cnn,wrn28_2 --dtype bfloat16 --batch 64 \
        --image-size 32 --channels 3
    python benchmarks/train_step.py --profile              # + where the SSL-only time goes

One JSON line per case on stdout (with --profile, one more line per case with "profile" in it).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boostmis_jax import xla_env  # before jax: the XLA defaults users get

xla_env.configure()

import jax
import jax.numpy as jnp
import numpy as np

from boostmis_jax import parallel
from boostmis_jax.augment import make_views
from boostmis_jax.defaults import get_config
from boostmis_jax.models import build_model
from boostmis_jax.steps import example_keys, make_bare_step, make_preprocess
from boostmis_jax.train import build_training, fresh_state

NUM_CLASSES = 10


def _on_gpu() -> bool:
    return jax.default_backend() != "cpu"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    gpu = _on_gpu()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=None,
                   help="model name(s), repeatable or comma list (default: cnn on CPU; cnn,wrn28_2 on GPU)")
    p.add_argument("--dtype", action="append", default=None, choices=["float32", "bfloat16"],
                   help="model.dtype, repeatable (default float32)")
    p.add_argument("--batch", type=int, default=64 if gpu else 16, help="labeled batch B (global)")
    p.add_argument("--uratio", type=int, default=7)
    p.add_argument("--steps", type=int, default=30 if gpu else 5, help="timed steps per step kind")
    p.add_argument("--warmup", type=int, default=5 if gpu else 1, help="untimed steps after compiling")
    p.add_argument("--image-size", type=int, default=32 if gpu else 28)
    p.add_argument("--channels", type=int, default=3 if gpu else 1)
    p.add_argument("--widths", default="", help="cnn widths, comma list (default: the config's)")
    p.add_argument("--bn", choices=["fused", "flax"], default="fused",
                   help="BatchNorm+activation: models.layers' fused one (the models' default) or flax's")
    p.add_argument("--threshold", default="boostmis", help="ssl.threshold (boostmis | fixed | none)")
    p.add_argument("--profile", nargs="?", const="all", default="",
                   help="also time the views alone and each strong-augment piece; optional MODEL:DTYPE[,...] "
                        "limits it to those cases (default: every case)")
    a = p.parse_args(argv)
    models = a.model or (["cnn", "wrn28_2"] if gpu else ["cnn"])
    a.model = [m.strip() for item in models for m in item.split(",") if m.strip()]
    a.dtype = a.dtype or ["float32"]
    return a


def make_cfg(a: argparse.Namespace, model: str, dtype: str):
    cfg = get_config()
    cfg.model.name = model
    cfg.model.dtype = dtype
    cfg.train.batch_size = a.batch
    cfg.ssl.uratio = a.uratio
    cfg.ssl.threshold = a.threshold
    if a.widths:
        cfg.model.widths = tuple(int(w) for w in a.widths.split(","))
    return cfg


def make_data(a: argparse.Namespace, num_train: int, seed: int = 0) -> tuple[dict, dict]:
    """Random uint8 images and labels: the SSL batch and the bare batch of the same B + 2uB images."""
    rng = np.random.default_rng(seed)
    B, uB = a.batch, a.uratio * a.batch
    shape = (a.image_size, a.image_size, a.channels)
    xl = rng.integers(0, 256, (B,) + shape, dtype=np.uint8)
    xu = rng.integers(0, 256, (uB,) + shape, dtype=np.uint8)
    ssl = {"xl": xl, "yl": rng.integers(0, NUM_CLASSES, B).astype(np.int32),
           "xu": xu, "iu": rng.choice(num_train, uB, replace=False).astype(np.int32),
           "yu": rng.integers(0, NUM_CLASSES, uB).astype(np.int32)}
    bare = {"x": np.concatenate([xl, xu, xu[::-1]]),
            "y": rng.integers(0, NUM_CLASSES, B + 2 * uB).astype(np.int32)}
    return ssl, bare


def _block(tree) -> None:
    jax.block_until_ready(tree)


def time_fn(fn: Callable[[], None], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def cost(compiled) -> dict:
    """flops / bytes accessed from XLA's cost analysis (a dict, or a one-element list on older jax)."""
    try:
        c = compiled.cost_analysis()
    except Exception as e:  # noqa: BLE001  some backends do not implement it
        return {"error": type(e).__name__}
    if isinstance(c, (list, tuple)):
        c = c[0] if c else {}
    c = c or {}
    return {"gflops": round(float(c.get("flops", 0.0)) / 1e9, 3),
            "gbytes": round(float(c.get("bytes accessed", 0.0)) / 1e9, 3)}


def cpu_seconds() -> float:
    """User + system CPU time of this process, every thread."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def loadavg() -> float | None:
    """1-minute load average: the CPU is shared, so every figure is printed beside it."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run_case(a: argparse.Namespace, model_name: str, dtype: str) -> dict:
    load0 = loadavg()
    mesh = parallel.make_mesh()
    n_dev = mesh.devices.size
    B, uB = a.batch, a.uratio * a.batch
    total = B + 2 * uB
    parallel.check_divisible("--batch", B, mesh)
    cfg = make_cfg(a, model_name, dtype)
    model = build_model(cfg.model, NUM_CLASSES)
    num_train = max(4 * uB, 1024)
    mean = (0.5,) * a.channels
    std = (0.25,) * a.channels
    training = build_training(cfg, model, kind="image", mean=mean, std=std, num_train=num_train,
                              num_classes=NUM_CLASSES)
    rep = parallel.replicated(mesh)
    sample = jnp.zeros((1, a.image_size, a.image_size, a.channels), jnp.float32)

    def new_state() -> dict:
        return fresh_state(training.init, sample, rep)

    ssl_state = new_state()
    # The bare step carries only what it updates (no EMA / threshold / best snapshot): that is the baseline.
    bare_keys = ("step", "params", "batch_stats", "opt_state")
    bare_state = {k: v for k, v in new_state().items() if k in bare_keys}
    ssl_batch, bare_batch = make_data(a, num_train)
    ssl_batch = parallel.put_global(ssl_batch, mesh)
    bare_batch = parallel.put_global(bare_batch, mesh)

    ssl_fn = training.step
    bare_fn = make_bare_step(model, training.tx, kind="image", mean=mean, std=std)
    ssl_jit = jax.jit(ssl_fn, out_shardings=(rep, rep), donate_argnums=0)
    bare_jit = jax.jit(bare_fn, out_shardings=(rep, rep), donate_argnums=0)

    t0 = time.perf_counter()
    ssl_c = ssl_jit.lower(ssl_state, ssl_batch).compile()
    t_ssl_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    bare_c = bare_jit.lower(bare_state, bare_batch).compile()
    t_bare_compile = time.perf_counter() - t0

    profiling = bool(a.profile) and (a.profile == "all" or f"{model_name}:{dtype}" in a.profile.split(","))
    runners = {"ssl": (ssl_c, ssl_state, ssl_batch), "bare": (bare_c, bare_state, bare_batch)}
    if profiling:
        # The same SSL step with every augmentation switched off: isolates threshold/EMA/loss cost from views.
        cfg_na = make_cfg(a, model_name, dtype)
        cfg_na.aug.flip, cfg_na.aug.pad_frac, cfg_na.aug.num_ops, cfg_na.aug.cutout = False, 0.0, 0, 0.0
        na_fn = build_training(cfg_na, model, kind="image", mean=mean, std=std, num_train=num_train,
                               num_classes=NUM_CLASSES).step
        na_state = new_state()
        na_c = jax.jit(na_fn, out_shardings=(rep, rep), donate_argnums=0).lower(na_state, ssl_batch).compile()
        runners["ssl_noaug"] = (na_c, na_state, ssl_batch)
    holder = {k: v[1] for k, v in runners.items()}

    def once(name: str) -> Callable[[], None]:
        fn, _, batch = runners[name]

        def go() -> None:
            holder[name], _ = fn(holder[name], batch)
            _block(holder[name])
        return go

    for name in runners:
        time_fn(once(name), a.warmup)
    times: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(a.steps):  # interleaved: background load hits every kind alike
        for name in runners:
            c0 = cpu_seconds()
            times[name] += time_fn(once(name), 1)
            cpu[name].append(cpu_seconds() - c0)
    t_ssl, t_bare = times["ssl"], times["bare"]
    ssl_s, bare_s = statistics.median(t_ssl), statistics.median(t_bare)
    dev = jax.devices()[0]
    row = {
        "model": model_name, "dtype": dtype, "device": f"{dev.device_kind} x{n_dev}",
        "batch": total, "labeled_batch": B, "uratio": a.uratio, "steps": a.steps, "warmup": a.warmup,
        "image": [a.image_size, a.image_size, a.channels],
        "widths": list(cfg.model.widths) if a.widths else None, "bn": a.bn,
        "ssl_img_per_s": round(total / ssl_s, 1), "bare_img_per_s": round(total / bare_s, 1),
        "ratio": round(bare_s / ssl_s, 3),
        # median of per-iteration bare/ssl pairs: robust to load drifting during the run
        "ratio_paired": round(statistics.median(b / s for b, s in zip(t_bare, t_ssl)), 3),
        # fastest step of each kind: the least disturbed by other processes on a shared machine
        "ssl_img_per_s_best": round(total / min(t_ssl), 1), "bare_img_per_s_best": round(total / min(t_bare), 1),
        "ssl_ms": round(1e3 * ssl_s, 2), "bare_ms": round(1e3 * bare_s, 2),
        # CPU seconds (all threads) per step: the work done, less sensitive to other processes than wall time
        "cpu_s_per_step": {k: round(statistics.median(v), 3) for k, v in cpu.items()},
        "compile_s": {"ssl": round(t_ssl_compile, 1), "bare": round(t_bare_compile, 1)},
        "cost": {"ssl": cost(ssl_c), "bare": cost(bare_c)},
        "jax": jax.__version__, "backend": jax.default_backend(),
        "loadavg": [load0, loadavg()], "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "times_ms": {k: [round(1e3 * t, 2) for t in v] for k, v in times.items()},
    }
    if profiling:
        row["_profile"] = profile_case(a, cfg, mesh, ssl_batch, bare_s, ssl_s,
                                       statistics.median(times["ssl_noaug"]))
    return row


def profile_case(a: argparse.Namespace, cfg, mesh, ssl_batch: dict, bare_s: float, ssl_s: float,
                 noaug_s: float) -> dict:
    """Where the extra SSL time goes: SSL step without views, the views alone, each strong-augment piece."""
    from boostmis_jax.augment import image as aug

    rep = parallel.replicated(mesh)
    pre = make_preprocess("image")
    views = make_views("image", cfg.aug)
    B, uB = a.batch, a.uratio * a.batch
    reps = max(3, a.steps)

    def timed(fn, *args) -> tuple[float, dict]:
        c = jax.jit(fn, out_shardings=rep).lower(*args).compile()
        _block(c(*args))
        ts = time_fn(lambda: _block(c(*args)), reps)
        return statistics.median(ts), cost(c)

    step = jnp.asarray(3, jnp.int32)

    def all_views(xl, xu, s):
        wl, _ = views(example_keys(0, s, 0, B), pre(xl))
        wu, su = views(example_keys(0, s, 1, uB), pre(xu))
        return jnp.concatenate([wl, wu, su])

    out: dict = {"ssl_ms": round(1e3 * ssl_s, 2), "bare_ms": round(1e3 * bare_s, 2),
                 "ssl_noaug_ms": round(1e3 * noaug_s, 2), "extra_ms": round(1e3 * (ssl_s - bare_s), 2),
                 "extra_from_views_ms": round(1e3 * (ssl_s - noaug_s), 2),
                 "extra_from_rest_ms": round(1e3 * (noaug_s - bare_s), 2)}
    t, c = timed(all_views, ssl_batch["xl"], ssl_batch["xu"], step)
    out["views_all_ms"] = round(1e3 * t, 2)
    out["views_all_cost"] = c

    xu = jax.jit(pre, out_shardings=rep)(ssl_batch["xu"])
    keys = example_keys(0, step, 1, uB)
    per_op: dict[str, float] = {}
    H, W, C = xu.shape[1:]
    ident = jnp.eye(3, dtype=jnp.float32)
    rot = jnp.asarray([[0.96, 0.26, 0.3], [-0.26, 0.96, -0.2], [0.0, 0.0, 1.0]], jnp.float32)

    def chw(fn, x):  # the op functions work channel-first; the public ones transpose at entry/exit
        return aug._hwc(fn(aug._chw(x)))

    pieces: dict[str, Callable] = {
        "weak_image": lambda k, x: aug.weak_image(k, x, flip=bool(cfg.aug.flip),
                                                  pad_frac=float(cfg.aug.pad_frac)),
        "strong_image": lambda k, x: aug.strong_image(k, x, num_ops=int(cfg.aug.num_ops),
                                                      magnitude=float(cfg.aug.magnitude),
                                                      cutout=float(cfg.aug.cutout), flip=bool(cfg.aug.flip),
                                                      pad_frac=float(cfg.aug.pad_frac)),
        "rand_augment": lambda k, x: aug.rand_augment(k, x, num_ops=int(cfg.aug.num_ops),
                                                      magnitude=float(cfg.aug.magnitude)),
        "autocontrast": lambda k, x: chw(aug.autocontrast, x),
        "equalize": lambda k, x: chw(aug.equalize, x),
        "solarize+posterize": lambda k, x: chw(lambda c: aug.posterize(aug.solarize(c, 0.7), 5), x),
        "enhance": lambda k, x: chw(lambda c: aug.enhance(c, 1.2, 0.9, 1.1, 0.8), x),
        "warp(identity m)": lambda k, x: chw(lambda c: aug.warp(c, ident), x),
        "warp(rotate m)": lambda k, x: chw(lambda c: aug.warp(c, rot), x),
        "cutout": lambda k, x: aug.cutout(k, x, float(cfg.aug.cutout)),
    }
    for name, fn in pieces.items():
        try:
            t, _ = timed(jax.vmap(fn), keys, xu)
            per_op[name] = round(1e3 * t, 3)
        except Exception as e:  # noqa: BLE001  a piece missing/renamed in augment: report, keep going
            per_op[name] = f"{type(e).__name__}: {e}"[:120]
    out["per_piece_ms_on_unlabeled_batch"] = per_op
    out["note"] = f"pieces are vmapped over the {uB} unlabeled images of shape {(H, W, C)}, jitted alone"
    return out


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    from boostmis_jax.models import layers
    layers.FUSED_DEFAULT = a.bn == "fused"
    for model_name in a.model:
        for dtype in a.dtype:
            row = run_case(a, model_name, dtype)
            prof = row.pop("_profile", None)
            print(json.dumps(row), flush=True)
            if prof is not None:
                print(json.dumps({"profile": prof, "model": model_name, "dtype": dtype}), flush=True)


if __name__ == "__main__":
    main()
