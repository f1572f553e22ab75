"""XLA compile seconds of each program a run compiles (init, SSL step, bare step, views alone, predict, pool
scorer), for a config, under the current XLA_FLAGS: where a cold start's compile time goes.

Why: on CPU a cold start is mostly compilation (benchmarks/NOTES.md, "Cold start"); this isolates each
program with the loop's own builders (build_training, make_scorer) so that an option (an XLA flag, a code
change in the augmentations) can be judged by the seconds it saves per program.

    python benchmarks/compile_time.py                       # demo config
    python benchmarks/compile_time.py --config configs/pneumonia.py
    XLA_FLAGS=--xla_backend_optimization_level=1 python benchmarks/compile_time.py

One JSON line: {program: {"trace_lower_s", "compile_s"}} plus `run_s` (one call of the compiled program) and
the flags. The persistent compilation cache is disabled here: every compile is a real one.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)

from boostmis_jax import xla_env  # before jax: the XLA defaults users get

xla_env.configure()

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_compilation_cache", False)

from boostmis_jax import acquisition, parallel
from boostmis_jax.augment import make_views
from boostmis_jax.data import load_dataset
from boostmis_jax.models import build_model
from boostmis_jax.steps import example_keys, make_bare_step, make_predict, make_preprocess
from boostmis_jax.train import RUN_ONCE, build_training


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("cfg", ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def timed_compile(fn, *args, **jit_kw) -> tuple[dict, object]:
    t0 = time.perf_counter()
    lowered = jax.jit(fn, **jit_kw).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    out = compiled(*args)
    jax.block_until_ready(out)
    t3 = time.perf_counter()
    return {"trace_lower_s": round(t1 - t0, 2), "compile_s": round(t2 - t1, 2), "run_s": round(t3 - t2, 3)}, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/demo.py")
    p.add_argument("--only", default="", help="comma list of programs "
                   "(init,init_default_level,step,bare,views,predict,scorer); init always runs")
    a = p.parse_args()
    only = {s for s in a.only.split(",") if s}
    want = lambda name: not only or name in only
    cfg = load_config(a.config)
    ds = load_dataset(cfg.data)
    mesh = parallel.make_mesh()
    rep = parallel.replicated(mesh)
    model = build_model(cfg.model, ds.num_classes)
    training = build_training(cfg, model, kind=ds.kind, mean=ds.mean, std=ds.std, num_train=len(ds.train_y),
                              num_classes=ds.num_classes)
    row: dict = {"config": a.config, "model": cfg.model.name, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                 "loadavg": float(Path("/proc/loadavg").read_text().split()[0])}
    sample = jnp.zeros((1,) + ds.train_x.shape[1:], jnp.float32)
    row["init"], state = timed_compile(lambda: training.init(sample), out_shardings=rep,
                                       compiler_options=RUN_ONCE)  # as train.fresh_state compiles it
    if want("init_default_level"):  # what RUN_ONCE saves: the same program at XLA's default LLVM level
        row["init_default_level"], _ = timed_compile(lambda: training.init(sample), out_shardings=rep)
    B = int(cfg.train.batch_size)
    uB = int(cfg.ssl.uratio) * B
    rng = np.random.default_rng(0)
    il, iu = rng.choice(len(ds.train_y), B), rng.choice(len(ds.train_y), uB, replace=False)
    batch = parallel.put_global({"xl": ds.train_x[il], "yl": ds.train_y[il].astype(np.int32), "xu": ds.train_x[iu],
                                 "iu": iu.astype(np.int32), "yu": ds.train_y[iu].astype(np.int32)}, mesh)
    if want("step"):
        row["step"], _ = timed_compile(training.step, state, batch, out_shardings=(rep, rep))
    if want("bare"):
        bare_state = {k: state[k] for k in ("step", "params", "batch_stats", "opt_state")}
        bare_batch = parallel.put_global({"x": np.concatenate([ds.train_x[il], ds.train_x[iu], ds.train_x[iu]]),
                                          "y": np.zeros(B + 2 * uB, np.int32)}, mesh)
        row["bare"], _ = timed_compile(make_bare_step(model, training.tx, kind=ds.kind, mean=ds.mean, std=ds.std),
                                       bare_state, bare_batch, out_shardings=(rep, rep))
    if want("views"):
        views, pre = make_views(ds.kind, cfg.aug), make_preprocess(ds.kind)
        row["views"], _ = timed_compile(lambda x, s: views(example_keys(0, s, 1, uB), pre(x)), batch["xu"],
                                        jnp.asarray(1, jnp.int32), out_shardings=rep)
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    if want("predict"):
        predict = make_predict(model, ds.kind, ds.mean, ds.std)
        n = -(-int(cfg.train.eval_batch_size) // mesh.devices.size) * mesh.devices.size
        xe = parallel.put_global(np.resize(ds.val_x, (n,) + ds.val_x.shape[1:]), mesh)
        row["predict"], _ = timed_compile(lambda v, x: jax.nn.softmax(predict(v, x)[0], -1), variables, xe,
                                          out_shardings=rep)
    if want("scorer"):
        scorer = acquisition.make_scorer(
            make_predict(model, ds.kind, ds.mean, ds.std, preprocessed=True),
            selectors=acquisition.parse_selectors(cfg.al.selectors), budget=int(cfg.al.budget), chunk=cfg.al.chunk,
            knn_k=cfg.al.knn_k, knn_block=cfg.al.knn_block, vat_xi=cfg.al.vat_xi, vat_eps=cfg.al.vat_eps,
            vat_ip=cfg.al.vat_ip, density=cfg.al.density, candidates=cfg.al.candidates)
        x, valid = parallel.pad_rows(ds.train_x, scorer.chunk * mesh.devices.size)
        xs = jax.jit(make_preprocess(ds.kind))(parallel.put_global(x, mesh))
        labeled = np.zeros(valid.shape, bool)
        labeled[: int(cfg.data.num_labels)] = True
        args = (variables, xs, parallel.put_global(valid & ~labeled, mesh), parallel.put_global(labeled, mesh),
                jax.random.key(0), jnp.asarray(0.9, jnp.float32))
        t0 = time.perf_counter()
        jax.block_until_ready(scorer(*args[:5], 0.9))  # it jits itself: first call = trace + compile + run
        t1 = time.perf_counter()
        jax.block_until_ready(scorer(*args[:5], 0.9))
        row["scorer"] = {"first_call_s": round(t1 - t0, 2), "run_s": round(time.perf_counter() - t1, 3),
                         "pool": int(x.shape[0])}
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
