"""Estimated true classes of the pool for class-balanced picking (host side, numpy: C is small).

The model's argmax is a poor guess of a row's class exactly where we pick (the uncertain rows) and under
prior shift (the pool's class mix is not the labeled set's). So: (1) temperature-scale the logits on the
validation split (Guo et al., ICML 2017), (2) estimate the pool's class prior by EM on those calibrated
posteriors (Saerens, Latinne & Decaestecker, Neural Computation 2002), (3) re-weight each row's posterior to
that prior. `estimate_classes` returns the adjusted posteriors, whose argmax is the estimated class.
"""
from __future__ import annotations

import numpy as np

T_GRID = np.geomspace(0.05, 20.0, 241)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T on a log grid (0.05..20) minimising the NLL of softmax(logits / T) on labeled rows."""
    logits, y = np.asarray(logits, np.float64), np.asarray(y, np.int64)
    if len(y) == 0:
        return 1.0
    nll = [-log_softmax(logits / t)[np.arange(len(y)), y].mean() for t in T_GRID]
    return float(T_GRID[int(np.argmin(nll))])


def saerens_prior(probs: np.ndarray, source_prior: np.ndarray, iters: int = 200,
                  tol: float = 1e-8) -> np.ndarray:
    """EM estimate of the class prior of the rows `probs` (N, C) came from, given the prior the posteriors
    were calibrated under."""
    probs = np.asarray(probs, np.float64)
    src = np.clip(np.asarray(source_prior, np.float64), 1e-6, None)
    prior = src.copy()
    for _ in range(iters):
        adj = adjust(probs, src, prior)
        new = adj.mean(0)
        if np.abs(new - prior).max() < tol:
            prior = new
            break
        prior = new
    return prior


# guard: EM on a poorly trained model can run a class's prior to ~0; keep prior ratios in [1/10, 10]
MAX_RATIO = 10.0


def adjust(probs: np.ndarray, source_prior: np.ndarray, target_prior: np.ndarray) -> np.ndarray:
    """Posteriors re-weighted from the source prior to the target prior (rows sum to 1); the prior ratio is
    clipped to [1/MAX_RATIO, MAX_RATIO]."""
    w = np.asarray(target_prior, np.float64) / np.clip(np.asarray(source_prior, np.float64), 1e-6, None)
    w = np.clip(w, 1.0 / MAX_RATIO, MAX_RATIO)
    p = np.asarray(probs, np.float64) * w[None, :]
    return p / np.clip(p.sum(1, keepdims=True), 1e-300, None)


def estimate_classes(pool_logits: np.ndarray, pool_mask: np.ndarray, val_logits: np.ndarray,
                     val_y: np.ndarray, num_classes: int) -> dict:
    """{"temperature", "source_prior", "prior" (of the masked pool rows), "posterior" (N, C) adjusted}."""
    t = fit_temperature(val_logits, val_y)
    src = np.bincount(np.asarray(val_y, np.int64), minlength=num_classes).astype(np.float64)
    src = src / max(src.sum(), 1.0) if src.sum() else np.full(num_classes, 1.0 / num_classes)
    p = np.exp(log_softmax(np.asarray(pool_logits, np.float64) / t))
    mask = np.asarray(pool_mask, bool)
    prior = saerens_prior(p[mask], src) if mask.any() else src
    return {"temperature": t, "source_prior": src, "prior": prior, "posterior": adjust(p, src, prior)}
