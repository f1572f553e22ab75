"""The train state: one plain-dict pytree, so jit, sharding and orbax treat it uniformly.

Keys: step, params, batch_stats, opt_state, ema_params, ema_batch_stats, ssl (threshold state + the
distribution-alignment class marginal), n_active (N_A, samples annotated by the oracle so far) and best
(a snapshot of the EMA variables with the best validation score in the current cycle).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from boostmis_jax.thresholds import ThresholdConfig, get_threshold


def cycle_lengths(cfg) -> tuple[int, int]:
    """Steps of the first stage and of every later active-learning cycle."""
    first = int(cfg.train.steps)
    later = int(cfg.al.steps_per_cycle) or first
    return first, later


def cycle_end_step(cfg, cycle: int) -> int:
    first, later = cycle_lengths(cfg)
    return first + cycle * later


def make_schedule(cfg):
    """FixMatch cosine (lr * cos(7 pi k / 16 K)), restarted at each active-learning cycle (warm start)."""
    first, later = cycle_lengths(cfg)
    base = float(cfg.train.lr)
    warm = int(cfg.train.get("warmup_steps", 0))

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        in_first = count < first
        pos = jnp.where(in_first, count, jnp.mod(count - first, later))
        length = jnp.where(in_first, first, later)
        lr = base * jnp.cos(7.0 * math.pi * pos / (16.0 * length))
        if warm:
            lr = lr * jnp.minimum(1.0, (count + 1.0) / warm)
        return lr

    return schedule


def make_optimizer(cfg) -> optax.GradientTransformation:
    """SGD + Nesterov with weight decay on kernels only (not BN scales/biases), as FixMatch."""
    def decay_mask(params):
        return jax.tree_util.tree_map_with_path(lambda p, _: p[-1].key == "kernel", params)

    return optax.chain(
        optax.add_decayed_weights(float(cfg.train.weight_decay), mask=decay_mask),
        optax.sgd(make_schedule(cfg), momentum=float(cfg.train.momentum), nesterov=bool(cfg.train.nesterov)),
    )


def threshold_config(cfg) -> ThresholdConfig:
    n_sel = max(1, len([s for s in str(cfg.al.selectors).split("+") if s.strip()]))
    return ThresholdConfig(a=float(cfg.ssl.a), b=float(cfg.ssl.b),
                           cycle_budget=max(1, int(cfg.al.budget) * n_sel),
                           fixed=float(cfg.ssl.fixed_threshold), tau_min=float(cfg.ssl.tau_min),
                           tau_max=float(cfg.ssl.tau_max), tau_momentum=float(cfg.ssl.tau_momentum))


def init_state(model, tx, sample_x, num_train: int, num_classes: int, cfg) -> dict:
    """Fresh state; deterministic in cfg.seed (parameters do not depend on the device count)."""
    variables = model.init(jax.random.key(cfg.seed), sample_x, train=False)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    thr = get_threshold(cfg.ssl.threshold)
    copy = lambda t: jax.tree.map(jnp.array, t)
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "batch_stats": batch_stats,
        "opt_state": tx.init(params),
        "ema_params": copy(params),
        "ema_batch_stats": copy(batch_stats),
        "ssl": {
            "thr": thr.init(num_train, num_classes, threshold_config(cfg)),
            "p_model": jnp.full((num_classes,), 1.0 / num_classes, jnp.float32),
            # class marginal of the labeled set (distribution alignment target); the loop sets it per cycle
            "p_target": jnp.full((num_classes,), 1.0 / num_classes, jnp.float32),
        },
        "n_active": jnp.zeros((), jnp.int32),
        "best": {"params": copy(params), "batch_stats": copy(batch_stats)},
    }
