"""Does the BUS density rank? On a real pool after a first training stage, for each density reading
(`degree`, the release's k-NN graph degree, and `cosine`, the mean neighbour similarity): the density's
coefficient of variation over the candidate pool, and how many of BUS's K picks plain class-balanced
entropy would also have picked (overlap 1.0 = the density changes nothing).

    python benchmarks/bus_density.py --workdir runs/bus_density [--steps 300] [--seed 0]

The first stage runs through the loop's own pieces (train.setup ... finish_cycle), checkpointed in
--workdir, so a rerun reuses it. Prints one JSON line per density reading.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout as `python benchmarks/bus_density.py` (configs/ is no package)
from boostmis_jax import xla_env  # before jax: the XLA defaults users get

xla_env.configure()

import jax
import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/bus_density")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pneumoniamnist.npz"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, default=16, help="K, picks per selector")
    a = p.parse_args()

    from first_stage import first_stage
    from boostmis_jax.acquisition import knn_density, make_scorer, select
    from boostmis_jax.acquisition.selection import balanced_top_k
    from configs.pneumonia import get_config

    cfg = get_config()
    cfg.data.path, cfg.seed, cfg.train.steps, cfg.al.cycles, cfg.al.budget = a.data, a.seed, a.steps, 1, a.budget
    with first_stage(cfg, a.workdir) as (r, book, variables, xs, valid, labeled):
        al = cfg.al
        C = r.ds.num_classes
        for density in ("degree", "cosine"):
            scorer = make_scorer(r.scorer.apply_fn, selectors=("bus", "entropy"), budget=a.budget,
                                 chunk=al.chunk, knn_k=al.knn_k, knn_block=al.knn_block, vat_xi=al.vat_xi,
                                 vat_eps=al.vat_eps, vat_ip=al.vat_ip, density=density,
                                 candidates=al.candidates)
            out = scorer(variables, xs, valid & ~labeled, labeled, jax.random.key(0), book.tau)
            cand = np.asarray(out["candidate"])
            pool = valid & ~labeled if density == "degree" else valid  # the scorer's pools
            dens = np.asarray(knn_density(out["emb"], pool, k=al.knn_k, block=al.knn_block, kind=density))[cand]
            pred = np.asarray(out["pred"])
            bus = [e["index"] for e in select(out["scores"], pred, cand, budget=a.budget, num_classes=C,
                                              selectors=("bus",))]
            ent = np.asarray(out["scores"]["entropy"], np.float64)
            plain = balanced_top_k(np.where(np.isfinite(ent), ent, -np.inf), pred, cand, a.budget, C)
            print(json.dumps({
                "density": density, "data": Path(a.data).name, "steps": a.steps, "seed": a.seed,
                "tau": round(float(book.tau), 4), "candidates": int(cand.sum()), "K": a.budget,
                "density_mean": round(float(dens.mean()), 4), "density_min": round(float(dens.min()), 4),
                "density_max": round(float(dens.max()), 4),
                "density_cv": round(float(dens.std() / max(dens.mean(), 1e-12)), 4),
                "overlap_with_balanced_entropy": round(len(set(bus) & set(plain)) / max(len(bus), 1), 3)}))


if __name__ == "__main__":
    main()
