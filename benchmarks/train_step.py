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

    python benchmarks/train_step.py --model wrn28_2 --dtype bfloat16 --no-bare --variants autotune0,bn_flax
        # + one line per variant (VARIANTS below), timed interleaved with the case's own SSL step
    python benchmarks/train_step.py ... --trace wrn28_2:bfloat16 --trace-out prof.json
        # + per-kernel device times of the SSL step from a jax.profiler trace (profile_summary.py)
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # profile_summary

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

# A/B variants of the SSL step, each compiled from the same code with per-compile XLA options (`opts`,
# DebugOptions fields: no process restart) or a model/batch change; prediction and outcome in NOTES.md.
VARIANTS: dict[str, dict] = {
    "autotune0": {"opts": {"xla_gpu_autotune_level": 0}},        # compile time: no cuDNN/GEMM autotuning
    "autotune1": {"opts": {"xla_gpu_autotune_level": 1}},
    "nhwc": {"opts": {"xla_gpu_force_conv_nhwc": True}},         # cuDNN convs in NHWC (fp32 too)
    "no_triton_gemm": {"opts": {"xla_gpu_enable_triton_gemm": False}},
    "bn_flax": {"bn": "flax"},                                   # flax BatchNorm instead of the fused one
    "batch128": {"batch": 128},                                  # twice the images per step
    "llvm_o1": {"opts": {"xla_backend_optimization_level": 1}},
}


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
    p.add_argument("--no-bare", action="store_true", help="skip the bare step (saves its compile)")
    p.add_argument("--bare-on", default="all", help="MODEL:DTYPE[,...] that get the bare step (default all)")
    p.add_argument("--variants", default="", help=f"comma list of {sorted(VARIANTS)}: one more line each")
    p.add_argument("--variants-on", default="all", help="MODEL:DTYPE[,...] the variants follow (default all)")
    p.add_argument("--views", default="", help="MODEL:DTYPE[,...]: also time the views (augmentation) alone")
    p.add_argument("--trace", default="", help="MODEL:DTYPE[,...]: per-kernel times of the SSL step")
    p.add_argument("--trace-out", default="", help="where the full per-kernel summary goes (JSON)")
    p.add_argument("--trace-steps", type=int, default=5)
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
    ssl_jit = jax.jit(ssl_fn, out_shardings=(rep, rep), donate_argnums=0)

    t0 = time.perf_counter()
    ssl_lowered = ssl_jit.lower(ssl_state, ssl_batch)
    ssl_c = ssl_lowered.compile()
    t_ssl_compile = time.perf_counter() - t0  # trace + lower + compile: the first step's wait, empty cache
    runners = {"ssl": (ssl_c, ssl_state, ssl_batch)}
    t_bare_compile = bare_c = None
    case = f"{model_name}:{dtype}"
    if not a.no_bare and (a.bare_on == "all" or case in a.bare_on.split(",")):
        bare_fn = make_bare_step(model, training.tx, kind="image", mean=mean, std=std)
        bare_jit = jax.jit(bare_fn, out_shardings=(rep, rep), donate_argnums=0)
        t0 = time.perf_counter()
        bare_c = bare_jit.lower(bare_state, bare_batch).compile()
        t_bare_compile = time.perf_counter() - t0
        runners["bare"] = (bare_c, bare_state, bare_batch)

    profiling = (bool(a.profile) and "bare" in runners
                 and (a.profile == "all" or f"{model_name}:{dtype}" in a.profile.split(",")))
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
    t_ssl = times["ssl"]
    ssl_s = statistics.median(t_ssl)
    # as the loop runs it: steps dispatched back to back, one wait at the end (no per-step host round trip)
    pipelined_s = pipelined(runners["ssl"][0], holder, "ssl", ssl_batch, a.steps)
    dev = jax.devices()[0]
    row = {
        "model": model_name, "dtype": dtype, "device": f"{dev.device_kind} x{n_dev}",
        "batch": total, "labeled_batch": B, "uratio": a.uratio, "steps": a.steps, "warmup": a.warmup,
        "image": [a.image_size, a.image_size, a.channels],
        "widths": list(cfg.model.widths) if a.widths else None, "bn": a.bn,
        "ssl_img_per_s": round(total / ssl_s, 1),
        "ssl_img_per_s_pipelined": round(total / pipelined_s, 1),
        # fastest step of each kind: the least disturbed by other processes on a shared machine
        "ssl_img_per_s_best": round(total / min(t_ssl), 1),
        "ssl_ms": round(1e3 * ssl_s, 2), "ssl_ms_pipelined": round(1e3 * pipelined_s, 3),
        # CPU seconds (all threads) per step: the work done, less sensitive to other processes than wall time
        "cpu_s_per_step": {k: round(statistics.median(v), 3) for k, v in cpu.items()},
        "compile_s": {"ssl": round(t_ssl_compile, 2)},
        "cost": {"ssl": cost(ssl_c)},
        "jax": jax.__version__, "backend": jax.default_backend(),
        "loadavg": [load0, loadavg()], "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "times_ms": {k: [round(1e3 * t, 2) for t in v] for k, v in times.items()},
    }
    if bare_c is not None:
        t_bare = times["bare"]
        bare_s = statistics.median(t_bare)
        row.update({
            "bare_img_per_s": round(total / bare_s, 1), "ratio": round(bare_s / ssl_s, 3),
            # median of per-iteration bare/ssl pairs: robust to load drifting during the run
            "ratio_paired": round(statistics.median(b / s for b, s in zip(t_bare, t_ssl)), 3),
            "bare_img_per_s_best": round(total / min(t_bare), 1), "bare_ms": round(1e3 * bare_s, 2)})
        row["compile_s"]["bare"] = round(t_bare_compile, 2)
        row["cost"]["bare"] = cost(bare_c)
    if profiling:
        row["_profile"] = profile_case(a, cfg, mesh, ssl_batch, statistics.median(times["bare"]), ssl_s,
                                       statistics.median(times["ssl_noaug"]))
    if a.views and (a.views == "all" or case in a.views.split(",")):
        row["views_ms"] = views_ms(a, cfg, mesh, ssl_batch)
        row["views_share"] = round(row["views_ms"] / row["ssl_ms"], 3)
    if a.trace and (a.trace == "all" or case in a.trace.split(",")):
        row["_trace"] = trace_case(a, runners["ssl"][0], holder, ssl_batch, case)
    if a.variants and (a.variants_on == "all" or case in a.variants_on.split(",")):
        row["_variants"] = (ssl_lowered, runners["ssl"][0], holder, ssl_batch, total)
    return row


def views_ms(a: argparse.Namespace, cfg, mesh, ssl_batch: dict) -> float:
    """Milliseconds of the step's augmentation program alone (weak + strong views of every image)."""
    rep = parallel.replicated(mesh)
    pre = make_preprocess("image")
    views = make_views("image", cfg.aug)
    B, uB = a.batch, a.uratio * a.batch

    def all_views(xl, xu, s):
        wl, _ = views(example_keys(0, s, 0, B), pre(xl))
        wu, su = views(example_keys(0, s, 1, uB), pre(xu))
        return jnp.concatenate([wl, wu, su])

    step = jnp.asarray(3, jnp.int32)
    c = jax.jit(all_views, out_shardings=rep).lower(ssl_batch["xl"], ssl_batch["xu"], step).compile()
    _block(c(ssl_batch["xl"], ssl_batch["xu"], step))
    return round(1e3 * statistics.median(time_fn(lambda: _block(c(ssl_batch["xl"], ssl_batch["xu"], step)),
                                                 max(3, a.steps))), 3)


def pipelined(fn, holder: dict, name: str, batch: dict, n: int) -> float:
    """Seconds per step of `n` steps dispatched back to back (the loop's way), after one warm step."""
    holder[name], _ = fn(holder[name], batch)
    _block(holder[name])
    t0 = time.perf_counter()
    for _ in range(max(n, 1)):
        holder[name], _ = fn(holder[name], batch)
    _block(holder[name])
    return (time.perf_counter() - t0) / max(n, 1)


def trace_case(a: argparse.Namespace, fn, holder: dict, batch: dict, case: str) -> dict:
    """Per-kernel device times of the SSL step: a jax.profiler trace of --trace-steps steps, summarised
    by profile_summary.py (full summary to --trace-out, the busiest lines in the returned dict)."""
    import tempfile

    from profile_summary import short, summarize

    d = tempfile.mkdtemp(prefix="step_trace_")
    n = max(1, a.trace_steps)
    try:
        with jax.profiler.trace(d):
            for _ in range(n):
                holder["ssl"], _ = fn(holder["ssl"], batch)
            _block(holder["ssl"])
        full = summarize(d, calls=n)
    except Exception as e:  # noqa: BLE001  a profiler problem must not lose the case's timings
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    full["case"] = case
    if a.trace_out:
        Path(a.trace_out).write_text(json.dumps(full, indent=1))
    return short(full)


def run_variants(a: argparse.Namespace, model_name: str, dtype: str, base: tuple) -> None:
    """One JSON line per --variants entry: its compile seconds and its SSL step timed interleaved with the
    base SSL step (the same code and state shapes unless the variant changes the model or batch)."""
    from boostmis_jax.models import layers

    lowered, base_c, holder, base_batch, base_total = base
    mesh = parallel.make_mesh()
    rep = parallel.replicated(mesh)
    for name in [v.strip() for v in a.variants.split(",") if v.strip()]:
        spec = VARIANTS.get(name)
        out: dict = {"variant": name, "model": model_name, "dtype": dtype, "spec": spec}
        if spec is None:
            out["error"] = f"unknown variant; choose from {sorted(VARIANTS)}"
            print(json.dumps(out), flush=True)
            continue
        try:
            opts = dict(spec.get("opts", {}))
            batch, total, low = base_batch, base_total, lowered
            state_v = jax.tree.map(jnp.copy, holder["ssl"])
            if "bn" in spec or "batch" in spec:
                va = argparse.Namespace(**{**vars(a), "batch": spec.get("batch", a.batch)})
                layers.FUSED_DEFAULT = spec.get("bn", a.bn) == "fused"
                cfg = make_cfg(va, model_name, dtype)
                model = build_model(cfg.model, NUM_CLASSES)
                num_train = max(4 * va.uratio * va.batch, 1024)
                ch = (0.5,) * a.channels, (0.25,) * a.channels
                tr = build_training(cfg, model, kind="image", mean=ch[0], std=ch[1], num_train=num_train,
                                    num_classes=NUM_CLASSES)
                sample = jnp.zeros((1, a.image_size, a.image_size, a.channels), jnp.float32)
                state_v = fresh_state(tr.init, sample, rep)
                batch = parallel.put_global(make_data(va, num_train)[0], mesh)
                total = va.batch * (1 + 2 * va.uratio)
                t0 = time.perf_counter()
                low = jax.jit(tr.step, out_shardings=(rep, rep), donate_argnums=0).lower(state_v, batch)
            else:
                t0 = time.perf_counter()
            comp = low.compile(compiler_options=opts) if opts else low.compile()
            out["compile_s"] = round(time.perf_counter() - t0, 2)
            layers.FUSED_DEFAULT = a.bn == "fused"
            hv = {"v": state_v, "ssl": holder["ssl"]}
            runs = {"v": (comp, batch), "ssl": (base_c, base_batch)}

            def go(k: str) -> None:
                fn, b = runs[k]
                hv[k], _ = fn(hv[k], b)
                _block(hv[k])

            for k in runs:
                time_fn(lambda k=k: go(k), a.warmup)
            ts: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(a.steps):
                for k in runs:
                    ts[k] += time_fn(lambda k=k: go(k), 1)
            holder["ssl"] = hv["ssl"]
            v_s, b_s = statistics.median(ts["v"]), statistics.median(ts["ssl"])
            out.update({"img_per_s": round(total / v_s, 1), "base_img_per_s": round(base_total / b_s, 1),
                        "speedup": round((total / v_s) / (base_total / b_s), 3), "batch": total,
                        "img_per_s_pipelined": round(total / pipelined(comp, hv, "v", batch, a.steps), 1),
                        # per-iteration throughput ratio, variant over base
                        "paired": round(statistics.median(total * b / (base_total * v)
                                                          for b, v in zip(ts["ssl"], ts["v"])), 3)})
        except Exception as e:  # noqa: BLE001  an unknown flag or a failed compile: report, go on
            out["error"] = f"{type(e).__name__}: {e}"[:400]
        finally:
            layers.FUSED_DEFAULT = a.bn == "fused"
        print(json.dumps(out), flush=True)


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
            trace = row.pop("_trace", None)
            variants = row.pop("_variants", None)
            print(json.dumps(row), flush=True)
            if prof is not None:
                print(json.dumps({"profile": prof, "model": model_name, "dtype": dtype}), flush=True)
            if trace is not None:
                print(json.dumps({"kernel_profile": trace, "model": model_name, "dtype": dtype}), flush=True)
            if variants is not None:
                run_variants(a, model_name, dtype, variants)


if __name__ == "__main__":
    main()
