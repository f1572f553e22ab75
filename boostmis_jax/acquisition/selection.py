"""Pool scores -> the oracle's shopping list (host side: K is small; the N-sized work is a few sorts)."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from boostmis_jax.acquisition.scorers import check_selectors, is_balanced, needs_of
from boostmis_jax.acquisition.scoring import score_pool
from boostmis_jax.errors import UserError
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
           selectors: tuple[str, ...], coreset_idx: Any = None) -> list[dict]:
    """Union of each selector's top-`budget` candidates (the paper: aus top-K  U  bus top-K).

    Selectors pick in `selectors` order and a later selector skips rows already taken, moving on to its next
    best, so every cycle annotates exactly budget * len(selectors) distinct rows (when the pool allows): that
    keeps label counts equal when comparing selector sets, and N_A/(2K) in the threshold exact. A row that a
    later selector also ranked in its own top-`budget` lists that selector in "selectors". Rows that are not candidates (labeled, padded, invalid) or score -inf/NaN are
    never picked. Returns [{"index", "selector", "selectors", "score", "predicted"}] sorted by selector order,
    then score desc, then index.
    """
    selectors = check_selectors(selectors)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise UserError(f"al.budget: got {budget!r}; expected an integer >= 0 (samples per selector)")
    if num_classes < 1:
        raise UserError(f"num_classes: got {num_classes!r}; expected an integer >= 1")
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
        picks = pick(ranked_mask & ~taken)
        for i in picks:
            if i not in entries:
                entries[i] = {"index": int(i), "selector": name, "selectors": [name],
                              "score": float(score[i]), "predicted": int(pred_np[i])}
    order = {name: j for j, name in enumerate(selectors)}
    return sorted(entries.values(), key=lambda e: (order[e["selector"]], -e["score"], e["index"]))


def acquire(apply_fn: Any, variables: Any, x: jax.Array, candidate: Any, labeled: Any, key: jax.Array, *,
            selectors: tuple[str, ...], budget: int, num_classes: int, cfg: Any) -> list[dict]:
    """One AL round: score the pool on device (`score_pool`) and pick up to `budget` rows per selector."""
    selectors = check_selectors(selectors)
    # coreset ranks enough centers to back-fill rows the selectors before it already took
    out = score_pool(apply_fn, variables, x, candidate, labeled, key, selectors=selectors, cfg=cfg,
                     budget=int(budget) * len(selectors))
    cand = to_host(candidate).astype(bool) & ~to_host(labeled).astype(bool)
    return select(out["scores"], out["pred"], cand, budget=int(budget), num_classes=num_classes,
                  selectors=selectors, coreset_idx=out.get("coreset_idx"))
