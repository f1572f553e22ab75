"""Confidence thresholds for pseudo-labels: a registry of pure (init, update) pairs.

Contract (every entry)::

    init(num_train, num_classes, cfg) -> state                  # a dict of fixed-shape device arrays
    update(state, probs, idx, valid, n_active, cfg) -> (mask, tau, new_state, logs)

`probs` are the weak-view class probabilities of the global unlabeled batch (after distribution
alignment), `idx` their global train indices, `valid` False on padded rows (which never change the state),
`n_active` N_A. `mask` says which rows get a pseudo-label, `tau` is the scalar threshold to log as
`train/threshold` (the mean class threshold for class-wise entries), `logs` a dict of float32 scalars
logged as `train/<name>`. The state is a pytree of arrays only, so jit, sharding and orbax treat it like
the rest of the train state and a resume continues bit for bit. `leave_pool(state, is_labeled)` is called
when a cycle's labeled set is fixed: rows that were annotated leave the unlabeled pool.

boostmis -- BoostMIS (Zhang et al., CVPR 2022), Eq. 2: tau_t = a * min(1, C_t / C_{t-1}) + b * N_A / (2K)
----------------------------------------------------------------------------------------------------------
*The paper*: C_t is the model's "learning status", the number of unlabeled samples it predicts with
confidence at time t; while it grows the threshold stays at a + b N_A/2K, when it falls (the model is
losing confident samples) tau falls with it and lets more pseudo-labels through. N_A is the number of
actively annotated samples, 2K the samples annotated per round (K per selector, two selectors).

*The release* (wannature/BoostMIS, first commit 638debb, `models/boostmis/boostmis_utils.py` and
`boostmis.py`) intends the per-step, per-batch reading: `select = max_probs >= p_cutoff` (0.95),
`count_t = count_nonzero(select)` against a module-global `count_temp` holding the previous batch's
count. As shipped it is inert: `count_t` is then overwritten by `len(pseudo_label)` (the batch size), so
the ratio is batch size over batch size = 1, and the call passes `N_a=100, K=2*args.K` (= 100 with the
default K = 50) instead of `args.N_a`, so tau = a + b = 0.95 on every step. `args.N_a = len(al_indices)`
(set after each round, never read) shows the intent: N_A is the count annotated in the *latest* round.

*What we do and why*:
  * N_A is the latest round's annotation count (the loop sets it; at most 2K), so N_A/2K is in [0, 1] and
    tau <= a + b. N_A/2K is clamped to 1 as well, so a + b is a hard ceiling even if a caller passes more.
  * C_t is the number of confident predictions (max prob >= `status_conf`, fixed at 0.95 as in the
    release, independent of tau so the status does not feed back on itself) summed over the last W =
    `status_window` steps; C_{t-1} is the same sum over the W steps before them (a ring buffer of 2W
    per-step counts in the state). We compare rates (count / valid rows seen in the window), which equals
    the count ratio when batches are full and ignores padding.
  * Why a window, and why W = 50 (measured on PneumoniaMNIST, configs/pneumonia.py with 2 AL rounds,
    48 unlabeled rows per step, trained with FixMatch at 0.95 and the confident fraction logged every
    step; the status replayed offline): in the steady part of the first stage (steps 300-1000, fraction
    0.89 +- 0.04) the per-batch ratio (W = 1) is below 0.98 on 43% of steps and lowers tau by 0.025 on
    average, with single-step dips to a status of 0.66 -- sampling noise, not learning status. W = 25
    leaves 8% of those steps below 0.98, W = 50 none (mean lowering 0.002). The real event, the first 50
    steps after a round adds labels and restarts the learning rate (fraction 0.89 -> 0.76), still gives a
    status of 0.84 at W = 50 (tau about 0.14 lower for a few dozen steps) while W = 100 only reaches 0.90.
    A real drop shows on the very next step and fully within W steps. Our earlier per-sample memory over
    the pool, compared step to step, failed the other way: one step rewrites at most one batch of the
    pool, so its ratio was 1 to four decimals and tau never moved.
  * Semantics that follow: a steady rise keeps tau at a + b N_A/2K; a drop lowers tau at once, by up to
    a * (1 - new/old) after W steps; once the rate has been flat at the new level for 2W steps the ratio
    is 1 again and tau returns to a + b N_A/2K (the status measures change, as in the paper). Before 2W
    steps have been seen the status is 1. The window runs on across cycles, so a drop right after a round
    (labels added, learning rate restarted) is compared with the end of the previous cycle.
  * No EMA on tau (the window already smooths, an EMA would only delay the response); tau is clipped to
    [tau_min, tau_max] so a collapse of C_t cannot open the mask to everything (tau_min).
  * The mask of step t uses the status from steps before t and the current N_A, so the threshold never
    depends on the batch it filters.

flexmatch -- FlexMatch (Zhang et al., NeurIPS 2021), Curriculum Pseudo Labeling
--------------------------------------------------------------------------------
A per-sample memory over the train set holds each sample's latest confident prediction (conf > `fixed`;
-1 = never confident, -2 = labeled, out of the pool). sigma(c) = #memory == c; the learning effect
beta(c) = sigma(c) / max(max_c sigma, N_unused) with the threshold warm-up (N_unused = #memory == -1;
without warm-up the denominator is max_c sigma); tau_c = M(beta(c)) * fixed with the convex M(x) = x/(2-x)
(or linear M(x) = x); mask = conf > tau_{argmax}. As USB's FlexMatchThresholdingHook, the mask uses the
memory before this batch, then the memory takes the batch's confident predictions. The paper writes the
comparisons as ">"; USB uses ">=" -- they differ only on exact ties.

freematch -- FreeMatch (Wang et al., ICLR 2023), Self-Adaptive Thresholding
----------------------------------------------------------------------------
tau_global = EMA of the batch mean max-confidence, p_tilde = EMA of the batch mean probability vector,
label_hist = EMA of the batch argmax histogram (all momentum `free_momentum`, 0.999; initialised to 1/C as
in the paper, so early on almost every row passes and the threshold climbs with the model's confidence --
USB initialises them to ones, starting at tau = 1, which at m = 0.999 differs for the first ~thousand
steps); tau_c = p_tilde_c / max_c p_tilde * tau_global; mask = conf >= tau_{argmax}. As in the paper and
USB the EMAs take the current batch before the mask is computed. p_tilde and label_hist also feed the
self-adaptive fairness loss (`losses.freematch_fairness`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp

from boostmis_jax.errors import UserError

NEVER, OUT_OF_POOL = -1, -2  # flexmatch memory codes


class ThresholdConfig(NamedTuple):
    """Static (hashable) hyper-parameters, captured by the jitted step. Defaults live in defaults.py only;
    build it with `threshold_config`."""
    a: float
    b: float
    cycle_budget: int            # 2K: samples annotated per round (K per selector)
    fixed: float                 # fixed: the threshold; flexmatch: the upper threshold tau
    tau_min: float
    tau_max: float
    status_conf: float           # boostmis: confidence counted in the learning status C_t
    status_window: int           # boostmis: W, steps summed into C_t
    flex_mapping: str            # flexmatch: convex | linear
    flex_warmup: bool            # flexmatch: threshold warm-up (unused samples in the max)
    free_momentum: float         # freematch: EMA momentum of tau_global, p_tilde, label_hist


FLEX_MAPPINGS = ("convex", "linear")


def threshold_config(ssl, *, cycle_budget: int) -> ThresholdConfig:
    """The static threshold settings from the `ssl` sub-config (one-line UserError on bad values);
    `cycle_budget` is 2K, the samples annotated per round."""
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise UserError(f"ssl.{key}={ssl[key]!r}: {what}; set --config.ssl.{key}=...")

    need(0 < float(ssl.status_conf) <= 1, "status_conf", "must be in (0, 1]")
    need(int(ssl.status_window) >= 1 and float(ssl.status_window).is_integer(), "status_window",
         "must be an integer >= 1")
    need(str(ssl.flex_mapping) in FLEX_MAPPINGS, "flex_mapping", f"choose one of {list(FLEX_MAPPINGS)}")
    need(0 <= float(ssl.free_momentum) < 1, "free_momentum", "must be in [0, 1)")
    need(float(ssl.fairness_weight) >= 0, "fairness_weight", "must be >= 0")
    need(float(ssl.fairness_weight) == 0 or ssl.threshold == "freematch", "fairness_weight",
         "the fairness loss needs FreeMatch's class marginals; use it with ssl.threshold=freematch or set 0")
    return ThresholdConfig(a=float(ssl.a), b=float(ssl.b), cycle_budget=max(1, int(cycle_budget)),
                           fixed=float(ssl.fixed_threshold), tau_min=float(ssl.tau_min),
                           tau_max=float(ssl.tau_max), status_conf=float(ssl.status_conf),
                           status_window=int(ssl.status_window), flex_mapping=str(ssl.flex_mapping),
                           flex_warmup=bool(ssl.flex_warmup), free_momentum=float(ssl.free_momentum))


def _keep(state: dict, is_labeled) -> dict:
    return state


@dataclass(frozen=True)
class Threshold:
    init: Callable[[int, int, ThresholdConfig], dict]
    update: Callable[..., tuple[jnp.ndarray, jnp.ndarray, dict, dict]]
    uses_unlabeled: bool = True
    # (state, is_labeled[num_train] bool) -> state: rows annotated so far leave the unlabeled pool
    leave_pool: Callable[[dict, jnp.ndarray], dict] = _keep


THRESHOLDS: dict[str, Threshold] = {}


def register_threshold(name: str, init, update, uses_unlabeled: bool = True, leave_pool=_keep) -> None:
    THRESHOLDS[name] = Threshold(init, update, uses_unlabeled, leave_pool)


def get_threshold(name: str) -> Threshold:
    if name not in THRESHOLDS:
        raise UserError(f"ssl.threshold={name!r} is unknown; choose one of {sorted(THRESHOLDS)}")
    return THRESHOLDS[name]


def _f32(x) -> jnp.ndarray:
    return jnp.asarray(x, jnp.float32)


# ----------------------------------------------------------------------------------------------------
# boostmis
# ----------------------------------------------------------------------------------------------------
def _boostmis_init(num_train: int, num_classes: int, cfg: ThresholdConfig) -> dict:
    ring = 2 * cfg.status_window
    return {
        "conf_ring": jnp.zeros((ring,), jnp.float32),   # per-step confident counts, last 2W steps
        "seen_ring": jnp.zeros((ring,), jnp.float32),   # per-step valid rows, last 2W steps
        "steps": jnp.zeros((), jnp.int32),              # steps written (batches with a valid row)
        "status": jnp.ones((), jnp.float32),            # min(1, C_t / C_{t-1}) after the last step
    }


def boostmis_tau(count_now, count_prev, n_active, cfg: ThresholdConfig):
    """The paper's formula, unclipped: a*min(1, C_t/C_{t-1}) + b*min(1, N_A/(2K)); ratio 1 without C_{t-1}."""
    ratio = jnp.where(count_prev > 0, count_now / jnp.maximum(count_prev, 1e-12), 1.0)
    return cfg.a * jnp.minimum(1.0, ratio) + _annotation_term(n_active, cfg)


def _annotation_term(n_active, cfg: ThresholdConfig):
    return cfg.b * jnp.clip(_f32(n_active) / float(cfg.cycle_budget), 0.0, 1.0)


def _window_rates(conf_ring, seen_ring, steps, window: int):
    """(rate of the last W steps, rate of the W before, whether 2W steps were seen)."""
    ring = conf_ring.shape[0]
    last = jnp.mod(steps - 1, ring)
    age = jnp.mod(last - jnp.arange(ring), ring)       # 0 = the latest step written
    cur = age < window
    now = jnp.sum(jnp.where(cur, conf_ring, 0.0)) / jnp.maximum(jnp.sum(jnp.where(cur, seen_ring, 0.0)), 1.0)
    prev = jnp.sum(jnp.where(cur, 0.0, conf_ring)) / jnp.maximum(jnp.sum(jnp.where(cur, 0.0, seen_ring)), 1.0)
    return now, prev, steps >= ring


def _boostmis_update(state, probs, idx, valid, n_active, cfg: ThresholdConfig):
    conf = jnp.max(probs, axis=-1)
    tau = jnp.clip(cfg.a * state["status"] + _annotation_term(n_active, cfg), cfg.tau_min, cfg.tau_max)
    mask = (conf >= tau) & valid
    n_seen = jnp.sum(valid).astype(jnp.float32)
    n_conf = jnp.sum((conf >= cfg.status_conf) & valid).astype(jnp.float32)
    write = n_seen > 0                                   # an all-padding batch changes nothing
    pos = jnp.mod(state["steps"], state["conf_ring"].shape[0])
    conf_ring = jnp.where(write, state["conf_ring"].at[pos].set(n_conf), state["conf_ring"])
    seen_ring = jnp.where(write, state["seen_ring"].at[pos].set(n_seen), state["seen_ring"])
    steps = state["steps"] + write.astype(jnp.int32)
    now, prev, filled = _window_rates(conf_ring, seen_ring, steps, cfg.status_window)
    ratio = jnp.where(filled & (prev > 0), now / jnp.maximum(prev, 1e-12), 1.0)
    status = jnp.where(write, jnp.minimum(1.0, ratio), state["status"]).astype(jnp.float32)
    new = {"conf_ring": conf_ring, "seen_ring": seen_ring, "steps": steps, "status": status}
    return mask, tau, new, {"learning_status": status, "confident_rate": _f32(now)}


register_threshold("boostmis", _boostmis_init, _boostmis_update)


# ----------------------------------------------------------------------------------------------------
# flexmatch
# ----------------------------------------------------------------------------------------------------
def _flex_init(num_train: int, num_classes: int, cfg: ThresholdConfig) -> dict:
    return {"memory": jnp.full((num_train,), NEVER, jnp.int32)}


def flexmatch_class_thresholds(memory, num_classes: int, cfg: ThresholdConfig) -> jnp.ndarray:
    """tau_c = M(beta(c)) * fixed from the pseudo-label memory (FlexMatch Eq. 6-11)."""
    sigma = jnp.bincount(jnp.where(memory >= 0, memory, num_classes), length=num_classes + 1)
    sigma = sigma[:num_classes].astype(jnp.float32)
    denom = jnp.max(sigma)
    if cfg.flex_warmup:
        denom = jnp.maximum(denom, jnp.sum(memory == NEVER).astype(jnp.float32))
    beta = jnp.where(denom > 0, sigma / jnp.maximum(denom, 1.0), 0.0)
    mapped = beta / (2.0 - beta) if cfg.flex_mapping == "convex" else beta
    return (mapped * cfg.fixed).astype(jnp.float32)


def _flex_update(state, probs, idx, valid, n_active, cfg: ThresholdConfig):
    num_classes = probs.shape[-1]
    conf = jnp.max(probs, axis=-1)
    pred = jnp.argmax(probs, axis=-1).astype(jnp.int32)
    tau_c = flexmatch_class_thresholds(state["memory"], num_classes, cfg)
    mask = (conf > tau_c[pred]) & valid
    select = (conf > cfg.fixed) & valid
    n = state["memory"].shape[0]
    # rows not selected (or padded) scatter to an out-of-range index, which "drop" discards
    memory = state["memory"].at[jnp.where(select, idx, n)].set(pred, mode="drop")
    return mask, jnp.mean(tau_c), {"memory": memory}, {"threshold_min": jnp.min(tau_c),
                                                       "threshold_max": jnp.max(tau_c)}


def _flex_leave_pool(state: dict, is_labeled) -> dict:
    return {**state, "memory": jnp.where(is_labeled, OUT_OF_POOL,
                                         jnp.where(state["memory"] == OUT_OF_POOL, NEVER, state["memory"]))}


register_threshold("flexmatch", _flex_init, _flex_update, leave_pool=_flex_leave_pool)


# ----------------------------------------------------------------------------------------------------
# freematch
# ----------------------------------------------------------------------------------------------------
def _free_init(num_train: int, num_classes: int, cfg: ThresholdConfig) -> dict:
    u = 1.0 / num_classes
    return {"tau_global": jnp.asarray(u, jnp.float32),
            "p_tilde": jnp.full((num_classes,), u, jnp.float32),
            "label_hist": jnp.full((num_classes,), u, jnp.float32)}


def _free_update(state, probs, idx, valid, n_active, cfg: ThresholdConfig):
    num_classes = probs.shape[-1]
    m = cfg.free_momentum
    w = valid.astype(jnp.float32)
    n = jnp.sum(w)
    any_valid = n > 0
    conf = jnp.max(probs, axis=-1)
    pred = jnp.argmax(probs, axis=-1)
    mean_conf = jnp.sum(conf * w) / jnp.maximum(n, 1.0)
    mean_prob = jnp.sum(probs * w[:, None], axis=0) / jnp.maximum(n, 1.0)
    hist = jnp.sum(_one_hot(pred, num_classes) * w[:, None], axis=0) / jnp.maximum(n, 1.0)
    ema = lambda old, x: jnp.where(any_valid, m * old + (1.0 - m) * x, old).astype(jnp.float32)
    new = {"tau_global": ema(state["tau_global"], mean_conf), "p_tilde": ema(state["p_tilde"], mean_prob),
           "label_hist": ema(state["label_hist"], hist)}
    tau_c = new["p_tilde"] / jnp.max(new["p_tilde"]) * new["tau_global"]
    mask = (conf >= tau_c[pred]) & valid
    return mask, jnp.mean(tau_c), new, {"threshold_min": jnp.min(tau_c), "threshold_max": jnp.max(tau_c)}


def _one_hot(labels, num_classes: int) -> jnp.ndarray:
    return (labels[:, None] == jnp.arange(num_classes)[None, :]).astype(jnp.float32)


register_threshold("freematch", _free_init, _free_update)


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


# FreeMatch's EMA momenta for a run of `total_steps`: the paper's 0.999 is a time constant of 1,000 steps in a
# 2^20-step run; keep that share of the run, with a floor of 10 steps (about 10 unlabeled batches averaged):
#   time constant = max(10, total_steps * 1000 / 2^20),   momentum = 1 - 1 / time constant
# (2^20 steps -> 0.999, the paper; 1,200 steps -> 0.9; the study sets ssl.free_momentum with it).
FREE_PAPER_STEPS, FREE_PAPER_TIME_CONSTANT, FREE_MIN_TIME_CONSTANT = 2 ** 20, 1000.0, 10.0


def freematch_momentum(total_steps: int) -> float:
    """ssl.free_momentum scaled to the run length (see the formula above)."""
    tc = max(FREE_MIN_TIME_CONSTANT, float(total_steps) * FREE_PAPER_TIME_CONSTANT / FREE_PAPER_STEPS)
    return float(1.0 - 1.0 / tc)
