"""Benchmark: scoring the unlabeled pool with aus+bus through `make_scorer` (the AL loop's own scorer).

Prints one JSON line per case with the seconds per call (median of --repeats after a warm-up call), the
FLOPs the scoring must do (model forward + ip*(jvp + input-backward) + adversarial forward per sample for
VAT, plus the N*N*E*2 kNN matmul) and `ratio_to_matmul` = seconds / (those FLOPs at the rate a plain
jnp.dot of comparable shapes reaches in the same run). Case 1: MLP head on feature vectors; case 2: a
small CNN on images.

    python benchmarks/acquisition.py                 # CPU defaults: 20k x 2048 features, 2k 28x28 images
    python benchmarks/acquisition.py --pool 1000000  # GPU default
    python benchmarks/acquisition.py --skip-features --skip-images --knn-variants float32:2048,bfloat16:4096
        # the k-NN density alone on random (--knn-pool x --knn-dim) embeddings, one line per precision:block

Every case line carries `achieved_tflops` (the FLOPs counted above over the measured seconds) beside
`floor_s` (those FLOPs at the measured dot rates) and, for the k-NN alone, `knn_s`, `knn_tflops` and
`knn_floor_s` (N^2 E 2 FLOPs at the rate of a dot of the k-NN's block shape in its precision).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from boostmis_jax import xla_env  # before jax: the XLA defaults users get

xla_env.configure()

import flax.linen as nn
import jax
import jax.numpy as jnp

from boostmis_jax.acquisition import density, make_scorer
from boostmis_jax.defaults import get_config

AL = get_config().al


class MLPHead(nn.Module):
    """dim -> hidden (ReLU, the embedding) -> classes."""

    hidden: int
    classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        emb = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.classes)(emb), emb


class SmallCNN(nn.Module):
    """Two strided 3x3 convs, global average pool (the embedding), linear classifier."""

    classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(nn.Conv(16, (3, 3), strides=(2, 2))(x))
        x = nn.relu(nn.Conv(32, (3, 3), strides=(2, 2))(x))
        emb = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.classes)(emb), emb


def timed(fn: Callable[[], object], repeats: int, on_first: Callable[[float], None] | None = None) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())  # warm-up: compile + first run
    if on_first is not None:  # a large case says what it has before the timed calls (a cut run keeps it)
        on_first(time.perf_counter() - t0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def dot_rate(m: int, k: int, n: int, repeats: int, dtype: str = "float32") -> float:
    """FLOP/s of a plain jitted jnp.dot (m,k)@(k,n) (fp32 accumulation) on random `dtype` operands."""
    a = jax.random.normal(jax.random.key(1), (m, k)).astype(dtype)
    b = jax.random.normal(jax.random.key(2), (k, n)).astype(dtype)
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    return 2.0 * m * k * n / timed(lambda: f(a, b), max(repeats, 3))


def knn_case(n: int, dim: int, precision: str, block: int, k: int, repeats: int, kind: str,
             reference: object = None, group: int | None = None, shortlist: int = 0) -> tuple[dict, object]:
    """The k-NN density alone on random embeddings: seconds, TFLOP/s and its floor; with `reference`
    (the float32 neighbours of the same pool), the share of rows whose top-k set equals it. `group`: the
    top-k prefilter's group size (0: plain top-k), `shortlist`: bf16 candidates per row (0: 2k)."""
    emb = jax.random.normal(jax.random.key(7), (n, dim), jnp.float32)
    valid = jnp.ones((n,), bool)
    prec = density.resolve_precision(precision)
    group = density.GROUP if group is None else group
    saved, density.GROUP = density.GROUP, group
    jax.clear_caches()  # GROUP is read while tracing: no stale program of another variant
    try:
        return _knn_case(emb, valid, n, dim, prec, block, k, repeats, kind, reference, shortlist, group)
    finally:
        density.GROUP = saved
        jax.clear_caches()


def _knn_case(emb, valid, n, dim, prec, block, k, repeats, kind, reference, shortlist, group):
    seconds = timed(lambda: density.knn_density(emb, valid, k=k, block=block, kind=kind, precision=prec,
                                                shortlist=shortlist), repeats)
    b = min(block, n)
    flops = 2.0 * n * n * dim
    rate = dot_rate(b, dim, b, repeats, "bfloat16" if prec == "bfloat16" else "float32")
    out = {"case": "knn", "pool": n, "dim": dim, "precision": prec, "block": block, "k": k, "kind": kind,
           "group": group, "shortlist": shortlist or (2 * k if prec == "bfloat16" else k),
           "seconds": round(seconds, 4), "flops": flops, "achieved_tflops": round(flops / seconds / 1e12, 3),
           "dot_tflops": round(rate / 1e12, 3), "floor_s": round(flops / rate, 4),
           "ratio_to_floor": round(seconds * rate / flops, 3), "device": str(jax.devices()[0].device_kind),
           "backend": jax.default_backend()}
    nb = None
    if reference is not None or prec == "float32":
        nb = density.knn_neighbours(emb, valid, k=k, block=block, precision=prec, shortlist=shortlist)
    if reference is not None and nb is not None:
        same = jnp.all(jnp.sort(nb[1], axis=1) == jnp.sort(reference[1], axis=1), axis=1)
        out["topk_equal_to_float32"] = round(float(jnp.mean(same)), 6)
        out["max_abs_sim_diff"] = float(jnp.max(jnp.abs(nb[0] - reference[0])))
    return out, nb


def forward_flops(apply_fn: Callable, variables: object, x: jax.Array) -> float:
    """XLA's FLOP count of one eval forward, per sample."""
    cost = jax.jit(apply_fn).lower(variables, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / x.shape[0]


def run_case(name: str, model: nn.Module, x_shape: tuple[int, ...], pool: int, args: argparse.Namespace,
             chunk: int, dot_shape: tuple[int, int, int]) -> dict:
    n_pad = -(-pool // chunk) * chunk  # the AL loop pads the pool to a multiple of the chunk
    x = jax.random.normal(jax.random.key(0), (n_pad,) + x_shape, jnp.float32)
    rows = jnp.arange(n_pad)
    valid = rows < pool
    labeled = rows < pool // 100
    candidate = valid & ~labeled
    variables = model.init(jax.random.key(3), x[:2])

    def apply_fn(v: object, xb: jax.Array) -> tuple[jax.Array, jax.Array]:
        return model.apply(v, xb)

    prec = density.resolve_precision(None)
    cfg = {"chunk": chunk, "knn_k": args.k, "knn_block": args.block or AL.knn_block, "vat_xi": AL.vat_xi,
           "vat_eps": AL.vat_eps, "vat_ip": args.ip, "density": AL.density, "candidates": "all"}
    scorers = {}
    key = jax.random.key(4)

    def call(selectors: tuple[str, ...]) -> Callable[[], object]:
        def run() -> object:
            if selectors not in scorers:
                scorers[selectors] = make_scorer(apply_fn, selectors=selectors, budget=1, **cfg)
            return scorers[selectors](variables, x, candidate, labeled, key)

        return run

    def first(sec: float) -> None:
        print(json.dumps({"case": f"{name}_first_call", "pool": pool, "seconds_with_compile": round(sec, 3),
                          "knn_block": cfg["knn_block"], "knn_precision": prec,
                          "device": str(jax.devices()[0].device_kind)}), flush=True)

    seconds = timed(call(("aus", "bus")), args.repeats, first)
    emb_dim = model.apply(variables, x[:2])[1].shape[-1]
    fwd = forward_flops(apply_fn, variables, x[:chunk])
    # linearized forward, ip x (jvp + input-only vjp), adversarial forward
    model_flops = n_pad * fwd * (1 + 2 * args.ip + 1)
    knn_flops = 2.0 * n_pad * n_pad * emb_dim
    model_rate = dot_rate(*dot_shape, args.repeats)
    knn_rate = dot_rate(min(cfg["knn_block"], n_pad), emb_dim, min(cfg["knn_block"], n_pad), args.repeats,
                        "bfloat16" if prec == "bfloat16" else "float32")
    ideal = model_flops / model_rate + knn_flops / knn_rate
    flops = model_flops + knn_flops
    knn_s = None
    if not args.no_knn_alone:
        emb = jax.jit(lambda v, xb: model.apply(v, xb)[1])(variables, x)
        knn_s = timed(lambda: density.knn_density(emb, candidate, k=args.k, block=cfg["knn_block"],
                                                  kind=AL.density), args.repeats)
    out = {
        "case": name, "pool": pool, "padded_pool": n_pad, "input_shape": list(x_shape),
        "dim": x_shape[0] if len(x_shape) == 1 else None,
        "hidden": args.hidden if name == "features" else None,
        "emb_dim": emb_dim, "classes": args.classes, "vat_iters": args.ip, "knn_k": args.k, "chunk": chunk,
        "knn_block": cfg["knn_block"], "selectors": ["aus", "bus"], "seconds": round(seconds, 4),
        "samples_per_s": round(pool / seconds, 1), "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(), "n_devices": len(jax.devices()), "flops": flops,
        "model_flops": model_flops, "knn_flops": knn_flops,
        "matmul_flops_per_s": round(flops / ideal, 1), "model_dot_flops_per_s": round(model_rate, 1),
        "knn_dot_flops_per_s": round(knn_rate, 1), "ratio_to_matmul": round(seconds / ideal, 3),
        "knn_precision": prec, "achieved_tflops": round(flops / seconds / 1e12, 3),
        "floor_s": round(ideal, 4), "knn_floor_s": round(knn_flops / knn_rate, 4),
    }
    if knn_s is not None:
        out.update(knn_s=round(knn_s, 4), knn_tflops=round(knn_flops / knn_s / 1e12, 3))
    if args.breakdown or name == "image":
        for sel in ("entropy", "aus", "bus"):
            out[f"seconds_{sel}_only"] = round(timed(call((sel,)), args.repeats), 4)
        # The model as XLA runs it, not a matmul: VAT costs 2 + 2*ip forward-equivalents (forward, ip x (jvp,
        # input-transpose), adversarial forward); entropy-only is one chunked forward pass over the pool.
        equiv = 2 + 2 * args.ip
        fwd_floor = equiv * out["seconds_entropy_only"] + knn_flops / knn_rate
        out.update(forward_equivalents=equiv, forward_floor_s=round(fwd_floor, 4),
                   ratio_to_forward=round(seconds / fwd_floor, 3))
    if args.profile and name == "image":
        out["profile"] = profile_ops(call(("aus", "bus")), scorers[("aus", "bus")],
                                     (variables, x, candidate, labeled, key, jnp.asarray(1.0, jnp.float32)))
    return out


def profile_ops(fn: Callable[[], object], scorer, args: tuple, top: int = 14) -> dict:
    """Where the scorer's time goes: per-op durations from a jax.profiler trace of two calls, grouped by
    what each XLA op (fusion) computes. Library convolutions that run asynchronously on XLA's thread pool
    are not in the trace: `untraced_ms` is the call time no op accounts for."""
    import collections
    import glob
    import gzip
    import re
    import tempfile

    jitted = next(iter(scorer._jitted.values()))  # the one compiled pass (one pool shape here)
    hlo = jitted.lower(*args).compile().as_text()
    comps = {m.group(1): m.group(2) for m in re.finditer(r"^(%[\w.\-]+) \(.*?\) -> .*? \{\n(.*?)\n\}", hlo,
                                                          re.DOTALL | re.MULTILINE)}
    calls = {m.group(1): m.group(2) for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?calls=(%[\w.\-]+)", hlo,
                                                          re.MULTILINE)}

    def label(op: str) -> str:
        body = comps.get(calls.get(op, ""), "")
        kinds = sorted(set(re.findall(r"= \S+ (convolution|dot|reduce|reduce-window|sort|scatter|gather|"
                                      r"rng-bit-generator|select-and-scatter|transpose)\(", body)))
        base = re.sub(r"[.\d]+$", "", op)
        return f"{base}[{'+'.join(kinds)}]" if kinds else base

    jax.block_until_ready(fn())
    d = tempfile.mkdtemp(prefix="acq_trace_")
    t0 = time.perf_counter()
    with jax.profiler.trace(d, create_perfetto_trace=True):
        for _ in range(2):
            jax.block_until_ready(fn())
    wall = (time.perf_counter() - t0) / 2
    path = glob.glob(d + "/**/*.trace.json.gz", recursive=True)[0]
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    per: collections.Counter = collections.Counter()
    names = set(calls) | {m.group(1) for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = ", hlo, re.MULTILINE)}
    for e in events:
        if e.get("ph") == "X" and e.get("name") in names:
            per[label(e["name"])] += e["dur"] / 2e3  # us -> ms, per call
    traced = sum(per.values())
    return {"call_ms": round(1e3 * wall, 1), "traced_ms": round(traced, 1),
            "untraced_ms": round(max(0.0, 1e3 * wall - traced), 1),
            "top_ms": {k: round(v, 1) for k, v in per.most_common(top)}}


def main() -> None:
    gpu = jax.default_backend() != "cpu"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", type=int, default=1_000_000 if gpu else 20_000, help="feature pool size")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--ip", type=int, default=1, help="VAT power iterations")
    p.add_argument("--k", type=int, default=10, help="kNN neighbours")
    p.add_argument("--chunk", type=int, default=None,
                   help=f"pool forward chunk (default al.chunk={AL.chunk})")
    p.add_argument("--block", type=int, default=None,
                   help=f"kNN block (default al.knn_block={AL.knn_block})")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--image-pool", type=int, default=100_000 if gpu else 2000)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--skip-images", action="store_true")
    p.add_argument("--breakdown", action="store_true", help="also time entropy-only, aus-only and bus-only "
                                                             "(always for the image case)")
    p.add_argument("--skip-features", action="store_true")
    p.add_argument("--image-channels", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="image case: per-op time from a profiler trace")
    p.add_argument("--precision", choices=density.PRECISIONS, default="auto",
                   help="the k-NN similarity's precision in the scorer (auto: bf16 on an accelerator)")
    p.add_argument("--knn-variants", default="",
                   help="PRECISION:BLOCK[:GROUP[:SHORTLIST]][,...]: time the k-NN density alone per variant; "
                        "GROUP 0 = plain top-k (default the prefilter's 16), SHORTLIST 0 = 2k")
    p.add_argument("--no-knn-alone", action="store_true", help="skip timing the k-NN alone in the cases")
    p.add_argument("--knn-pool", type=int, default=200_000 if gpu else 4096)
    p.add_argument("--knn-dim", type=int, default=512)
    args = p.parse_args()
    chunk = args.chunk or AL.chunk
    density.PRECISION = args.precision

    ref = None
    for v in [v for v in args.knn_variants.split(",") if v.strip()]:
        parts = v.strip().split(":") + ["", "", ""]
        prec, block, group, short = parts[:4]
        try:
            out, nb = knn_case(args.knn_pool, args.knn_dim, prec, int(block or AL.knn_block), args.k,
                               args.repeats, AL.density, ref, int(group) if group else None,
                               int(short or 0))
            if out["precision"] == "float32" and ref is None:
                ref = nb
        except Exception as e:  # noqa: BLE001  e.g. out of memory at a large block: report, go on
            out = {"case": "knn", "variant": v, "error": f"{type(e).__name__}: {e}"[:400]}
        print(json.dumps(out), flush=True)

    if not args.skip_features:
        feat = run_case("features", MLPHead(args.hidden, args.classes), (args.dim,), args.pool, args, chunk,
                        (chunk, args.dim, args.hidden))
        print(json.dumps(feat), flush=True)
    if not args.skip_images:
        s = args.image_size
        img = run_case("image", SmallCNN(args.classes), (s, s, args.image_channels), args.image_pool, args,
                       chunk, (chunk * (s // 4) ** 2, 9 * 16, 32))
        print(json.dumps(img), flush=True)


if __name__ == "__main__":
    main()
