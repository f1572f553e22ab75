"""Confidence thresholds for pseudo-labels: a registry of pure (init, update) pairs.

Every entry sees the same inputs -- the weak-view class probabilities of the unlabeled batch, their global
train indices, and N_A (actively annotated count) -- and keeps whatever it needs in its own state dict,
which lives on device inside the train state. Adding FlexMatch/FreeMatch is a new entry, not a new path.

`boostmis` (the paper, Eq. 2): tau_t = a * min(1, C_t / C_{t-1}) + b * N_A / (2K).

Our reading, since the released code never computes C_t (it collapses to a fixed 0.95):
  * C_t, the "learning status", is the number of unlabeled samples whose *latest* pseudo-label was
    confident. It is kept in a per-sample memory over the whole unlabeled set (index -> class, -1 when the
    last visit was not confident), so it is a property of the model over the pool, not of one batch
    (a per-batch count makes the ratio pure sampling noise).
  * C_{t-1} is the same count one step earlier. While the model is gaining confident samples the ratio is
    >= 1 and tau = a + b N_A / 2K; when it is *losing* them (confirmation drift, distribution shift after a
    labeled set grows), tau drops in proportion, admitting more pseudo-labels. Before any sample is
    confident (C_{t-1} = 0) the ratio is 1.
  * The raw tau is smoothed by an EMA (`tau_momentum`) and clipped to [tau_min, tau_max] so that
    N_A/(2K) > 1 after many cycles cannot push it past 1 and no single step can collapse it.
  * 2K is the number of samples annotated per cycle (K per selector, aus+bus in the paper), so
    N_A/(2K) counts completed annotation rounds; with other selector sets we use budget * #selectors, which
    keeps the threshold identical when comparing selectors at equal label counts.
  * The mask for step t uses tau_{t-1} (the status before seeing this batch), so the threshold never
    depends on the batch it filters.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp

from boostmis_jax.errors import UserError


class ThresholdConfig(NamedTuple):
    """Static (hashable) hyper-parameters, captured by the jitted step."""
    a: float = 0.9
    b: float = 0.05
    cycle_budget: int = 2        # 2K: samples annotated per cycle (K per selector, two selectors in the paper)
    fixed: float = 0.95
    tau_min: float = 0.5
    tau_max: float = 0.99
    tau_momentum: float = 0.9


def threshold_config(ssl, *, cycle_budget: int) -> ThresholdConfig:
    """The static threshold settings from the `ssl` sub-config; `cycle_budget` is 2K."""
    return ThresholdConfig(a=float(ssl.a), b=float(ssl.b), cycle_budget=max(1, int(cycle_budget)),
                           fixed=float(ssl.fixed_threshold), tau_min=float(ssl.tau_min),
                           tau_max=float(ssl.tau_max), tau_momentum=float(ssl.tau_momentum))


@dataclass(frozen=True)
class Threshold:
    init: Callable[[int, int, ThresholdConfig], dict]
    update: Callable[..., tuple[jnp.ndarray, jnp.ndarray, dict]]
    uses_unlabeled: bool = True


THRESHOLDS: dict[str, Threshold] = {}


def register_threshold(name: str, init, update, uses_unlabeled: bool = True) -> None:
    THRESHOLDS[name] = Threshold(init, update, uses_unlabeled)


def get_threshold(name: str) -> Threshold:
    if name not in THRESHOLDS:
        raise UserError(f"ssl.threshold={name!r} is unknown; choose one of {sorted(THRESHOLDS)}")
    return THRESHOLDS[name]


# ----------------------------------------------------------------------------------------------------
# boostmis
# ----------------------------------------------------------------------------------------------------
def _boostmis_init(num_train: int, num_classes: int, cfg: ThresholdConfig) -> dict:
    return {
        "memory": jnp.full((num_train,), -1, jnp.int32),
        "count": jnp.zeros((), jnp.float32),
        "tau": jnp.asarray(min(max(cfg.a, cfg.tau_min), cfg.tau_max), jnp.float32),
    }


def boostmis_tau(count_now, count_prev, n_active, cfg: ThresholdConfig):
    """The paper's formula (unsmoothed, unclipped): a*min(1, C_t/C_{t-1}) + b*N_A/(2K)."""
    ratio = jnp.where(count_prev > 0, count_now / jnp.maximum(count_prev, 1.0), 1.0)
    return cfg.a * jnp.minimum(1.0, ratio) + cfg.b * n_active / float(cfg.cycle_budget)


def _boostmis_update(state, probs, idx, valid, n_active, cfg: ThresholdConfig):
    conf = jnp.max(probs, axis=-1)
    pred = jnp.argmax(probs, axis=-1).astype(jnp.int32)
    tau = state["tau"]
    mask = (conf >= tau) & valid
    # Padded/invalid rows write to an out-of-range index, which scatter drops.
    safe_idx = jnp.where(valid, idx, state["memory"].shape[0])
    memory = state["memory"].at[safe_idx].set(jnp.where(mask, pred, -1), mode="drop")
    count = jnp.sum(memory >= 0).astype(jnp.float32)
    raw = boostmis_tau(count, state["count"], n_active.astype(jnp.float32), cfg)
    new_tau = cfg.tau_momentum * tau + (1.0 - cfg.tau_momentum) * raw
    new_tau = jnp.clip(new_tau, cfg.tau_min, cfg.tau_max)
    return mask, tau, {"memory": memory, "count": count, "tau": new_tau}, {}


register_threshold("boostmis", _boostmis_init, _boostmis_update)


# ----------------------------------------------------------------------------------------------------
# fixed (FixMatch) and none (supervised only)
# ----------------------------------------------------------------------------------------------------
def _fixed_init(num_train, num_classes, cfg):
    return {}


def _fixed_update(state, probs, idx, valid, n_active, cfg):
    tau = jnp.asarray(cfg.fixed, jnp.float32)
    return (jnp.max(probs, axis=-1) >= tau) & valid, tau, state, {}


def _none_update(state, probs, idx, valid, n_active, cfg):
    return jnp.zeros(probs.shape[:1], bool), jnp.asarray(1.0, jnp.float32), state, {}


register_threshold("fixed", _fixed_init, _fixed_update)
register_threshold("none", _fixed_init, _none_update, uses_unlabeled=False)
