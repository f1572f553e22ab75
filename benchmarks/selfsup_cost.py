"""What the self-supervised stage costs: seconds per 100 SimCLR steps (compile excluded, reported apart),
and the zero-label first round (embedding of the whole pool + TypiClust / ProbCover picks), for a config.

    python benchmarks/selfsup_cost.py --config configs/pneumonia.py            # CPU: PneumoniaMNIST CNN
    python benchmarks/selfsup_cost.py --config configs/pneumonia.py --batch 256 --steps 200

The step is the loop's own (selfsup.make_selfsup_step, jitted over the global batch as train.run jits it);
batches are drawn as the run draws them. One JSON line per run of this script: config, backend, devices,
batch, `compile_s`, `s_per_100_steps`, `embed_s`, `typiclust_s`, `probcover_s`, the load average.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boostmis_jax import xla_env  # before jax: the XLA defaults users get

xla_env.configure()

import jax
import jax.numpy as jnp
import numpy as np

from boostmis_jax import parallel, selfsup
from boostmis_jax.data import load_dataset
from boostmis_jax.models import build_model
from boostmis_jax.sampling import rows_for_step
from boostmis_jax.steps import make_predict, make_preprocess


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("cfg", ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/pneumonia.py")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=0, help="selfsup.batch_size (0 = the config's)")
    p.add_argument("--budget", type=int, default=32, help="first-round picks timed for typiclust/probcover")
    p.add_argument("--data", default="", help="data.path (default: the config's)")
    a = p.parse_args()
    cfg = load_config(a.config)
    if a.batch:
        cfg.selfsup.batch_size = a.batch
    cfg.selfsup.steps = a.steps
    if a.data:
        cfg.data.path = a.data
    ds = load_dataset(cfg.data)
    mesh = parallel.make_mesh()
    rep = parallel.replicated(mesh)
    model = build_model(cfg.model, ds.num_classes)
    sample = jnp.zeros((1,) + ds.train_x.shape[1:], jnp.float32)
    head = selfsup.make_head(cfg, model, sample)
    tx, schedule = selfsup.make_optimizer(cfg.selfsup)
    ss = jax.device_put(selfsup.init_selfsup(model, head, tx, sample, 0), rep)
    fn = selfsup.make_selfsup_step(model, head, tx, schedule, aug=cfg.aug, kind=ds.kind, mean=ds.mean,
                                   std=ds.std, seed=0, temperature=float(cfg.selfsup.temperature))
    step = jax.jit(fn, out_shardings=(rep, rep), donate_argnums=0)
    B = int(cfg.selfsup.batch_size)
    pool = np.arange(len(ds.train_x))
    batch = lambda s: {"x": ds.train_x[rows_for_step(pool, B, s, seed=0, cycle=0, stream=selfsup.ROW_STREAM)]}
    t0 = time.perf_counter()
    ss, m = step(ss, parallel.put_global(batch(0), mesh))
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s, b in parallel.prefetch(batch, range(1, a.steps + 1), mesh):
        ss, m = step(ss, b)
    jax.block_until_ready((ss, m))
    run_s = time.perf_counter() - t0

    predict = make_predict(model, ds.kind, ds.mean, ds.std, preprocessed=True)
    x, valid = parallel.pad_rows(ds.train_x, 512 * mesh.devices.size)
    xs = jax.jit(make_preprocess(ds.kind))(parallel.put_global(x, mesh))
    variables = {"params": ss["params"]["model"], "batch_stats": ss["batch_stats"]}

    def embed(v, xx):
        chunks = xx.reshape((-1, 512 * mesh.devices.size) + xx.shape[1:])
        e = jax.lax.map(lambda c: predict(v, c)[1], chunks)
        return selfsup.l2_normalize(e.reshape((-1,) + e.shape[2:]))

    t0 = time.perf_counter()
    emb = np.asarray(jax.jit(embed, out_shardings=rep)(variables, xs))[valid]
    embed_s = time.perf_counter() - t0
    row = {"config": a.config, "model": cfg.model.name, "backend": jax.default_backend(),
           "devices": mesh.devices.size, "batch": B, "pool": len(pool), "steps": a.steps,
           "compile_s": round(compile_s, 2), "s_per_100_steps": round(run_s * 100 / a.steps, 2),
           "final_loss": float(m["loss"]), "final_effective_rank": float(m["effective_rank"]),
           "embed_s": round(embed_s, 2)}
    for name in ("typiclust", "probcover"):
        t0 = time.perf_counter()
        picks = selfsup.pick_initial(name, emb, len(emb), a.budget, 0, ds.num_classes)
        row[f"{name}_s"] = round(time.perf_counter() - t0, 2)
        row[f"{name}_picks"] = len(picks)
    row["loadavg"] = float(Path("/proc/loadavg").read_text().split()[0])
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
