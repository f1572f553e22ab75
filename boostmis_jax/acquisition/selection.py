"""Pool scores -> the queries the oracle answers (host side: K is small; the N-sized work is a few sorts)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from boostmis_jax.acquisition.scoring import Scorer, is_balanced, needs_of
from boostmis_jax.oracle import Query
from boostmis_jax.parallel import to_host


def _ranked(score: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows in `mask` by score desc, ties by lower index."""
    rows = np.flatnonzero(mask)
    return rows[np.argsort(-score[rows], kind="stable")]


def top_k(score: np.ndarray, mask: np.ndarray, budget: int) -> list[int]:
    return _ranked(score, mask)[:budget].tolist()


def balanced_top_k(score: np.ndarray, pred: np.ndarray, mask: np.ndarray, budget: int,
                   num_classes: int) -> list[int]:
    """top-(K // C) per predicted class; unused quota (small classes, K % C) goes to the best remaining."""
    quota = budget // num_classes
    picked: list[int] = []
    if quota > 0:
        for c in range(num_classes):
            picked += _ranked(score, mask & (pred == c))[:quota].tolist()
    rest = mask.copy()
    rest[picked] = False
    picked += _ranked(score, rest)[: budget - len(picked)].tolist()
    return picked


def select(scores: dict, pred: Any, candidate: Any, *, budget: int, num_classes: int,
           selectors: Sequence[str], coreset_idx: Any = None) -> list[dict]:
    """Union of each selector's top-`budget` candidates (the paper: aus top-K  U  bus top-K).

    Selectors pick in `selectors` order and a later selector skips rows already taken, moving on to its next
    best, so every cycle annotates exactly budget * len(selectors) distinct rows (when the pool allows): that
    keeps label counts equal when comparing selector sets. A row that a later selector also ranked in its
    own top-`budget` lists that selector in "selectors". Rows that are not candidates or score -inf/NaN are
    never picked. Returns [{"index", "selector", "selectors", "score", "predicted"}] sorted by selector
    order, then score desc, then index.
    """
    cand = to_host(candidate).astype(bool)
    pred_np = to_host(pred).astype(np.int64)
    entries: dict[int, dict] = {}
    for name in selectors:
        score = to_host(scores[name]).astype(np.float64)
        score = np.where(np.isnan(score), -np.inf, score)
        ranked_mask = cand & (score > -np.inf)

        def pick(mask, name=name, score=score):
            if "coreset" in needs_of(name) and coreset_idx is not None:
                idx = [int(i) for i in to_host(coreset_idx) if i >= 0 and mask[i]]
                return list(dict.fromkeys(idx))[:budget]
            if is_balanced(name):
                return balanced_top_k(score, pred_np, mask, int(budget), num_classes)
            return top_k(score, mask, int(budget))

        if entries:
            for i in pick(ranked_mask):  # rows this selector wanted too: record the overlap
                if i in entries:
                    entries[i]["selectors"].append(name)
        taken = np.zeros_like(ranked_mask)
        taken[list(entries)] = True
        for i in pick(ranked_mask & ~taken):
            if i not in entries:
                entries[i] = {"index": int(i), "selector": name, "selectors": [name],
                              "score": float(score[i]), "predicted": int(pred_np[i])}
    order = {name: j for j, name in enumerate(selectors)}
    return sorted(entries.values(), key=lambda e: (order[e["selector"]], -e["score"], e["index"]))


def acquire(scorer: Scorer, variables: Any, x: jax.Array, unlabeled: Any, labeled: Any, key: jax.Array, *,
            num_classes: int, ids: Sequence[str] | None = None, tau: float = 1.0) -> list[Query]:
    """One AL round: score the pool on device (one call) and pick up to `scorer.budget` rows per selector.

    `ids` names rows for the oracle (default: the row index); each query carries the model's confidence."""
    out = scorer(variables, x, unlabeled, labeled, key, tau)
    picks = select(out["scores"], out["pred"], out["candidate"], budget=scorer.budget,
                   num_classes=num_classes, selectors=scorer.selectors, coreset_idx=out.get("coreset_idx"))
    conf = to_host(out["probs"]).max(axis=-1)
    return [Query(index=p["index"], id=str(ids[p["index"]]) if ids is not None else str(p["index"]),
                  selector=p["selector"], score=p["score"], predicted=p["predicted"],
                  selectors=tuple(p["selectors"]), confidence=float(conf[p["index"]])) for p in picks]
