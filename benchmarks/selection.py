"""What does each selector pick on a real pool? After one first training stage (PneumoniaMNIST by default),
one scoring pass with every selector, then one round of --round picks per variant (each selector alone, and
the aus+bus union), each described by the round diagnostics that summary.json carries: how diverse the
picks are (mean pairwise cosine of their embeddings), how confident the model is on them, their true
classes, and the AUS radius's flip rate.

    python benchmarks/selection.py --workdir runs/selection [--steps 300] [--seed 0] [--round 32]

The first stage runs through the loop's own pieces (train.setup ... finish_cycle), checkpointed in
--workdir, so a rerun reuses it. Prints one JSON line per variant, then a markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout as `python benchmarks/selection.py` (configs/ is no package)
from boostmis_jax import xla_env  # before jax: the XLA defaults users get

xla_env.configure()

import jax
import numpy as np

# every selector in one pass; the last stage ('>entropy') has one selector, so the pass sizes the ordered
# selectors' orders (and the cluster count) to one round of --round picks
SELECTORS = "aus+bus+typiclust+probcover+badge+random>entropy"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/selection")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pneumoniamnist.npz"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--round", type=int, default=32, help="picks per round (each variant)")
    a = p.parse_args()

    from first_stage import first_stage

    from boostmis_jax import train
    from boostmis_jax.acquisition import make_scorer, select
    from boostmis_jax.acquisition.calibration import estimate_classes
    from boostmis_jax.acquisition.scoring import STOCHASTIC_STREAM, softrank_gumbel
    from boostmis_jax.acquisition.selection import round_diagnostics
    from configs.pneumonia import get_config

    cfg = get_config()
    cfg.data.path, cfg.seed, cfg.train.steps, cfg.al.cycles = a.data, a.seed, a.steps, 1
    with first_stage(cfg, a.workdir) as (r, book, variables, xs, valid, labeled):
        al, ds = cfg.al, r.ds
        C = ds.num_classes
        scorer = make_scorer(r.scorer.apply_fn, selectors=SELECTORS, budget=a.round, chunk=al.chunk,
                             knn_k=al.knn_k, knn_block=al.knn_block, vat_xi=al.vat_xi, vat_eps=al.vat_eps,
                             vat_ip=al.vat_ip, density=al.density, candidates=al.candidates, batch="cluster",
                             num_classes=C)
        key = jax.random.key(a.seed)
        t0 = time.time()
        out = jax.device_get(scorer(variables, xs, valid & ~labeled, labeled, key, book.tau))
        score_s = time.time() - t0
        _, val_probs = train.evaluate(r, variables, "val")
        est = estimate_classes(out["logits"], out["unlabeled"], np.log(np.clip(val_probs, 1e-30, None)),
                               ds.val_y, C)
        counts = np.bincount(ds.train_y[np.asarray(book.labeled)], minlength=C)
        unl = np.asarray(out["unlabeled"])
        stoch = {n: np.asarray(softrank_gumbel(out["scores"][n], jax.random.fold_in(key, STOCHASTIC_STREAM),
                                               1.0)) for n in ("aus", "bus", "entropy")}
        half = {"aus": a.round // 2, "bus": a.round - a.round // 2}
        variants = {  # name: (selectors, scores, budget, select kwargs)
            "aus topk": (("aus",), out["scores"], a.round, {}),
            "aus cluster": (("aus",), out["scores"], a.round, {"cluster": out["cluster"]}),
            "aus stochastic": (("aus",), stoch, a.round, {}),
            "bus topk (predicted quotas)": (("bus",), out["scores"], a.round, {}),
            "bus topk (estimated quotas)": (("bus",), out["scores"], a.round,
                                            {"classes": est["posterior"].argmax(1), "class_counts": counts}),
            "bus cluster (estimated)": (("bus",), out["scores"], a.round,
                                        {"classes": est["posterior"].argmax(1), "class_counts": counts,
                                         "cluster": out["cluster"]}),
            "aus+bus topk (boostmis)": (("aus", "bus"), out["scores"], half, {}),
            "aus+bus cluster (estimated)": (("aus", "bus"), out["scores"], half,
                                            {"classes": est["posterior"].argmax(1), "class_counts": counts,
                                             "cluster": out["cluster"]}),
            "entropy topk": (("entropy",), out["scores"], a.round, {}),
            "entropy stochastic": (("entropy",), stoch, a.round, {}),
            "typiclust": (("typiclust",), out["scores"], a.round, {"masks": {"typiclust": unl}}),
            "probcover": (("probcover",), out["scores"], a.round, {"masks": {"probcover": unl}}),
            "badge": (("badge",), out["scores"], a.round, {}),
            "random in the low-confidence pool": (("random",), out["scores"], a.round, {}),
            "random over all unlabeled rows": (("random",), {"random": np.where(unl, out["scores"]["random"],
                                                                                 -np.inf)}, a.round,
                                               {"masks": {"random": unl}}),
        }
        rows = []
        for name, (sels, scores, budget, kw) in variants.items():
            if name == "random over all unlabeled rows":  # the pass masked random to the candidates
                stream = jax.random.fold_in(key, 1)
                u = np.asarray(jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(stream, i)))(
                    np.arange(len(unl), dtype=np.int32)))
                scores = {"random": np.where(unl, u, -np.inf)}
            picks = select(scores, out["pred"], out["candidate"], budget=budget, num_classes=C, selectors=sels,
                           orders=out["orders"], **kw)
            for q in picks:
                q["selector"] = "+".join(sels)
            d = round_diagnostics(out, picks, num_classes=C, true_y=ds.train_y, stage=0, est=est)
            rec = {"variant": name, "n": d["n"], "picks_mean_cosine": d["picks_mean_cosine"],
                   "mean_confidence": float(np.mean([np.asarray(out["probs"])[q["index"]].max() for q in picks])),
                   "picks_per_true_class": np.bincount(ds.train_y[[q["index"] for q in picks]],
                                                       minlength=C).tolist()}
            rows.append(rec)
            print(json.dumps(rec))
        print(json.dumps({"pool_mean_cosine": d["pool_mean_cosine"], "candidates": d["candidates"],
                          "aus_eps": d["aus_eps"], "aus_flip_rate": d["aus_flip_rate"],
                          "aus_flip_rates": d["aus_flip_rates"], "aus_entropy_spearman": d["aus_entropy_spearman"],
                          "labeled_per_class": counts.tolist(), "prior_estimate": d["prior_estimate"],
                          "pool_prior": (np.bincount(ds.train_y[unl[: len(ds.train_y)]], minlength=C)
                                         / unl.sum()).tolist(),
                          "score_s": round(score_s, 1), "steps": a.steps, "seed": a.seed, "tau": book.tau}))
        print("\n| variant | picks | mean pairwise cosine | mean confidence | true class counts |")
        print("|---|---|---|---|---|")
        for rec in rows:
            print(f"| {rec['variant']} | {rec['n']} | {rec['picks_mean_cosine']:.3f} | "
                  f"{rec['mean_confidence']:.3f} | {rec['picks_per_true_class']} |")


if __name__ == "__main__":
    main()
