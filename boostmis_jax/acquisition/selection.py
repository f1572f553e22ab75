"""Pool scores -> the queries the oracle answers (host side: K is small; the N-sized work is a few sorts),
plus the round's diagnostics (what was picked, how diverse, how the AUS radius behaved)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from boostmis_jax.acquisition.calibration import estimate_classes
from boostmis_jax.acquisition.scoring import Scorer, is_balanced, is_ordered, is_whole_pool
from boostmis_jax.oracle import Query
from boostmis_jax.parallel import to_host

SWITCH_MAX_FACTOR = 4  # a later stage starts at the latest once labels >= factor * switch_per_class * C


def _ranked(score: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows in `mask` by score desc, ties by lower index."""
    rows = np.flatnonzero(mask)
    return rows[np.argsort(-score[rows], kind="stable")]


def top_k(score: np.ndarray, mask: np.ndarray, budget: int) -> list[int]:
    return _ranked(score, mask)[:budget].tolist()


def balanced_top_k(score: np.ndarray, pred: np.ndarray, mask: np.ndarray, budget: int,
                   num_classes: int) -> list[int]:
    """top-(K // C) per predicted class; unused quota (small classes, K % C) goes to the best remaining."""
    return _greedy(_ranked(score, mask), budget, classes=pred, quotas=[budget // num_classes] * num_classes)


def deficit_quotas(budget: int, counts: np.ndarray) -> list[int]:
    """Split `budget` over classes in proportion to how far each is below a balanced labeled set of
    sum(counts) + budget rows (largest remainder; equal split when none is below)."""
    counts = np.asarray(counts, np.float64)
    c = len(counts)
    deficit = np.maximum((counts.sum() + budget) / c - counts, 0.0)
    if deficit.sum() <= 0:
        deficit = np.ones(c)
    share = budget * deficit / deficit.sum()
    q = np.floor(share).astype(int)
    for i in np.argsort(-(share - q), kind="stable")[: budget - q.sum()]:
        q[i] += 1
    return q.tolist()


def _greedy(ranked: np.ndarray, budget: int, *, classes: np.ndarray | None = None,
            quotas: Sequence[int] | None = None, cluster: np.ndarray | None = None,
            used: set | None = None) -> list[int]:
    """Walk `ranked` rows: per-class quotas first (if given), then the best rest; with `cluster`, rows of a
    cluster already used (by this or an earlier selector, `used` is updated) wait until no fresh cluster
    is left. Exactly min(budget, len(ranked)) distinct rows."""
    picked: list[int] = []
    taken: set = set()
    used = set() if used is None else used

    def take(i: int) -> None:
        picked.append(int(i))
        taken.add(int(i))
        if cluster is not None:
            used.add(int(cluster[i]))

    passes = [True, False] if cluster is not None else [False]
    if quotas is not None:
        for fresh in passes:
            for c, q in enumerate(quotas):
                have = sum(1 for i in picked if classes[i] == c)
                for i in ranked:
                    if have >= q or len(picked) >= budget:
                        break
                    if classes[i] == c and int(i) not in taken and not (fresh and int(cluster[i]) in used):
                        take(i)
                        have += 1
    for fresh in passes:
        for i in ranked:
            if len(picked) >= budget:
                break
            if int(i) not in taken and not (fresh and int(cluster[i]) in used):
                take(i)
    return picked


def select(scores: dict, pred: Any, candidate: Any, *, budget: int | dict, num_classes: int,
           selectors: Sequence[str], coreset_idx: Any = None, orders: dict | None = None,
           masks: dict | None = None, cluster: Any = None, classes: Any = None,
           class_counts: Any = None) -> list[dict]:
    """Union of each selector's top-`budget` candidates (the paper: aus top-K  U  bus top-K).

    Selectors pick in `selectors` order and a later selector skips rows already taken, moving on to its next
    best, so every cycle annotates exactly the sum of the budgets in distinct rows (when the pool allows):
    that keeps label counts equal when comparing selector sets. A row that a later selector also ranked in
    its own top-`budget` lists that selector in "selectors". Rows outside the selector's mask (`masks`,
    default `candidate`) or scoring -inf/NaN are never picked. Ordered selectors (`orders`) take their
    order first. Balanced selectors fill per-class quotas over `classes` (default the prediction): K // C
    each, or, with `class_counts` (labeled rows per class), quotas that steer the labeled set toward balance.
    `cluster` (N,) makes every selector prefer rows of clusters no pick of the round has used yet.
    Returns [{"index", "selector", "selectors", "score", "predicted"}] sorted by selector order, then score
    desc, then index.
    """
    cand = to_host(candidate).astype(bool)
    pred_np = to_host(pred).astype(np.int64)
    cls = pred_np if classes is None else np.asarray(to_host(classes)).astype(np.int64)
    orders = dict(orders or {})
    if coreset_idx is not None:
        orders.setdefault("coreset", coreset_idx)
    clu = None if cluster is None else to_host(cluster).astype(np.int64)
    counts = None if class_counts is None else np.asarray(class_counts, np.float64).copy()
    used: set = set()
    entries: dict[int, dict] = {}
    for name in selectors:
        k = int(budget[name] if isinstance(budget, dict) else budget)
        if k <= 0:
            continue
        score = to_host(scores[name]).astype(np.float64)
        score = np.where(np.isnan(score), -np.inf, score)
        base = cand if masks is None or name not in masks else to_host(masks[name]).astype(bool)
        ranked_mask = base & (score > -np.inf)

        def pick(mask, name=name, score=score, k=k, fresh=True):
            ranked = _ranked(score, mask)
            if name in orders:
                first = [int(i) for i in to_host(orders[name]) if i >= 0 and mask[i]]
                first = list(dict.fromkeys(first))[:k]
                rest = [int(i) for i in ranked if int(i) not in set(first)]
                return first + rest[: k - len(first)]
            quotas = None
            if is_balanced(name):
                quotas = ([k // num_classes] * num_classes if counts is None else deficit_quotas(k, counts))
            return _greedy(ranked, k, classes=cls, quotas=quotas, cluster=clu if fresh else None,
                           used=used if fresh else set())

        if entries:
            for i in pick(ranked_mask, fresh=False):  # rows this selector wanted too: record the overlap
                if i in entries:
                    entries[i]["selectors"].append(name)
        taken = np.zeros_like(ranked_mask)
        taken[list(entries)] = True
        for i in pick(ranked_mask & ~taken):
            if i not in entries:
                entries[i] = {"index": int(i), "selector": name, "selectors": [name],
                              "score": float(score[i]), "predicted": int(pred_np[i])}
                if counts is not None:
                    counts[cls[i]] += 1
    order = {name: j for j, name in enumerate(selectors)}
    return sorted(entries.values(), key=lambda e: (order[e["selector"]], -e["score"], e["index"]))


def choose_stage(stages: Sequence[Sequence[str]], class_counts: np.ndarray | None,
                 switch_per_class: int) -> int:
    """0 (the low-budget stage) until every class has >= switch_per_class labels, or until the labeled set
    reaches SWITCH_MAX_FACTOR * switch_per_class * C rows (a vanishing minority cannot hold the run in the
    low-budget phase forever); then the last stage. Unknown labels (None): stage 0."""
    if len(stages) == 1 or class_counts is None:
        return 0
    counts = np.asarray(class_counts)
    t = max(int(switch_per_class), 1)
    done = counts.min() >= t or counts.sum() >= SWITCH_MAX_FACTOR * t * len(counts)
    return len(stages) - 1 if done else 0


def stage_budgets(stage: Sequence[str], total: int) -> dict:
    """The round's `total` picks split over a stage's selectors (the remainder to the first ones)."""
    q, r = divmod(int(total), len(stage))
    return {name: q + (1 if j < r else 0) for j, name in enumerate(stage)}


def mean_pairwise_cosine(emb: np.ndarray) -> float | None:
    """Mean cosine similarity over distinct pairs of rows: (|sum e|^2 - n) / (n (n - 1)) on unit rows."""
    emb = np.asarray(emb, np.float64)
    n = len(emb)
    if n < 2:
        return None
    e = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    s = e.sum(0)
    return float((s @ s - np.sum(e * e)) / (n * (n - 1)))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    return float(spearmanr(a, b).statistic)


def round_diagnostics(out: dict, picks: list[dict], *, num_classes: int, true_y: Any, stage: int,
                      est: dict | None) -> dict:
    """The round's record for summary.json (cycles[i]["acquisition"]); keys documented in docs."""
    probs = to_host(out["probs"])
    emb = to_host(out["emb"])
    cand = to_host(out["candidate"]).astype(bool)
    unl = to_host(out["unlabeled"]).astype(bool)
    conf = probs.max(1)
    pred = probs.argmax(1)
    ty = None if true_y is None else np.asarray(true_y).astype(np.int64)
    per: dict[str, dict] = {}
    for name in dict.fromkeys(p["selector"] for p in picks):
        idx = np.array([p["index"] for p in picks if p["selector"] == name], np.int64)
        d = {"n": int(len(idx)),
             "picks_per_predicted_class": np.bincount(pred[idx], minlength=num_classes).tolist(),
             "mean_confidence": float(conf[idx].mean()), "picks_mean_cosine": mean_pairwise_cosine(emb[idx])}
        if ty is not None:
            t = ty[idx]
            t = t[(t >= 0) & (t < num_classes)]
            d["picks_per_true_class"] = np.bincount(t, minlength=num_classes).tolist()
        if est is not None:
            d["picks_per_estimated_class"] = np.bincount(est["posterior"][idx].argmax(1),
                                                         minlength=num_classes).tolist()
        per[name] = d
    allidx = np.array([p["index"] for p in picks], np.int64)
    diag = {"selectors": per, "stage": int(stage), "n": int(len(allidx)),
            "picks_mean_cosine": mean_pairwise_cosine(emb[allidx]) if len(allidx) else None,
            "pool_mean_cosine": mean_pairwise_cosine(emb[unl]), "candidates": int(cand.sum()),
            "candidates_mean_confidence": float(conf[cand].mean()) if cand.any() else None,
            "aus_flip_rate": None, "aus_entropy_spearman": None, "aus_eps": None}
    if "aus_eps" in out:
        diag["aus_eps"] = float(to_host(out["aus_eps"]))
        diag["aus_flip_rate"] = float(to_host(out["aus_flip_rate"]))
        diag["aus_flip_rates"] = [float(v) for v in to_host(out["aus_flip_rates"])]
        if "aus" in out["scores"]:
            p = probs[cand]
            ent = -(p * np.log(np.clip(p, 1e-30, None))).sum(1)
            diag["aus_entropy_spearman"] = spearman(to_host(out["scores"]["aus"])[cand], ent)
    if est is not None:
        diag.update(temperature=est["temperature"], prior_estimate=[float(v) for v in est["prior"]],
                    source_prior=[float(v) for v in est["source_prior"]])
    return diag


def acquire_round(scorer: Scorer, variables: Any, x: jax.Array, unlabeled: Any, labeled: Any, key: jax.Array,
                  *, num_classes: int, ids: Sequence[str] | None = None, tau: float = 1.0,
                  labels: Any = None, true_y: Any = None, val_probs: Any = None,
                  val_y: Any = None) -> tuple[list[Query], dict]:
    """One AL round: score the pool on device (one call), pick the round's rows, and describe the round.

    `labels` (N,) the known labels (used at labeled rows: per-class counts for the stage switch and the
    balancing quotas); `true_y` (N,) dataset labels for the diagnostics only (the simulated oracle's view);
    `val_probs`/`val_y` calibrate the estimated classes (al.balance=estimated). Returns (queries, diag)."""
    out = scorer(variables, x, unlabeled, labeled, key, tau)
    lab = to_host(labeled).astype(bool)
    counts = None
    if labels is not None:
        y = np.asarray(labels, np.int64)[lab[: len(labels)]]
        y = y[(y >= 0) & (y < num_classes)]
        counts = np.bincount(y, minlength=num_classes)
    stage = choose_stage(scorer.stages, counts, scorer.switch_per_class)
    names = scorer.stages[stage]
    est = None
    classes, class_counts = None, None
    if scorer.balance == "estimated" and any(is_balanced(s) for s in names):
        if val_probs is not None and val_y is not None and len(val_y):
            vl = np.log(np.clip(np.asarray(val_probs, np.float64), 1e-30, None))
            est = estimate_classes(to_host(out["logits"]), to_host(out["unlabeled"]), vl, np.asarray(val_y),
                                   num_classes)
            classes = est["posterior"].argmax(1)
        class_counts = counts
    masks = {s: out["unlabeled"] for s in names if is_whole_pool(s)}
    picks = select(out["rank"], out["pred"], out["candidate"], budget=stage_budgets(names, scorer.need),
                   num_classes=num_classes, selectors=names, orders=out["orders"], masks=masks,
                   cluster=out.get("cluster"), classes=classes, class_counts=class_counts)
    raw = {s: to_host(out["scores"][s]) for s in names}
    for p in picks:
        p["score"] = float(raw[p["selector"]][p["index"]])
    conf = to_host(out["probs"]).max(axis=-1)
    queries = [Query(index=p["index"], id=str(ids[p["index"]]) if ids is not None else str(p["index"]),
                     selector=p["selector"], score=p["score"], predicted=p["predicted"],
                     selectors=tuple(p["selectors"]), confidence=float(conf[p["index"]])) for p in picks]
    diag = round_diagnostics(out, picks, num_classes=num_classes, true_y=true_y, stage=stage, est=est)
    diag["batch"] = scorer.batch
    return queries, diag


def acquire(scorer: Scorer, variables: Any, x: jax.Array, unlabeled: Any, labeled: Any, key: jax.Array, *,
            num_classes: int, ids: Sequence[str] | None = None, tau: float = 1.0,
            **round_inputs: Any) -> list[Query]:
    """One AL round's queries (see `acquire_round`, which also returns the round's diagnostics).

    `ids` names rows for the oracle (default: the row index); each query carries the model's confidence."""
    return acquire_round(scorer, variables, x, unlabeled, labeled, key, num_classes=num_classes, ids=ids,
                         tau=tau, **round_inputs)[0]
