"""The train state: one plain-dict pytree, so jit, sharding and orbax treat it uniformly.

Keys: step, params, batch_stats, opt_state, ema_params, ema_batch_stats, ssl (threshold state + the
distribution-alignment class marginals), n_active (N_A: samples annotated in the latest round) and best
(a snapshot of the EMA variables with the best validation score in the current cycle).
"""
from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from boostmis_jax.thresholds import Threshold, ThresholdConfig


class Cycles(NamedTuple):
    """Steps of the first stage and of every later active-learning cycle; `lead` cycles of no training come
    first (1 in a zero-label run: cycle 0 is the first round of picks, before any classifier)."""
    first: int
    later: int
    lead: int = 0

    @classmethod
    def from_config(cls, steps: int, steps_per_cycle: int) -> Cycles:
        return cls(int(steps), int(steps_per_cycle) or int(steps))

    def end_step(self, cycle: int) -> int:
        c = cycle - self.lead
        return 0 if c < 0 else self.first + c * self.later

    def start_step(self, cycle: int) -> int:
        return self.end_step(cycle - 1) if cycle > 0 else 0


def make_schedule(lr: float, cycles: Cycles, warmup_steps: int = 0):
    """FixMatch cosine (lr * cos(7 pi k / 16 K)), restarted at each active-learning cycle (warm start)."""
    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        in_first = count < cycles.first
        pos = jnp.where(in_first, count, jnp.mod(count - cycles.first, cycles.later))
        length = jnp.where(in_first, cycles.first, cycles.later)
        out = lr * jnp.cos(7.0 * math.pi * pos / (16.0 * length))
        if warmup_steps:
            out = out * jnp.minimum(1.0, (count + 1.0) / warmup_steps)
        return out

    return schedule


def make_optimizer(schedule, *, momentum: float, nesterov: bool, weight_decay: float
                   ) -> optax.GradientTransformation:
    """SGD + Nesterov with weight decay on kernels only (not BN scales/biases), as FixMatch."""
    def decay_mask(params):
        return jax.tree_util.tree_map_with_path(lambda p, _: p[-1].key == "kernel", params)

    return optax.chain(
        optax.add_decayed_weights(float(weight_decay), mask=decay_mask),
        optax.sgd(schedule, momentum=float(momentum), nesterov=bool(nesterov)),
    )


def init_state(model, tx, sample_x, *, seed: int, num_train: int, num_classes: int, threshold: Threshold,
               tcfg: ThresholdConfig) -> dict:
    """Fresh state; deterministic in `seed` (parameters do not depend on the device count)."""
    variables = model.init(jax.random.key(seed), sample_x, train=False)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    copy = lambda t: jax.tree.map(jnp.array, t)
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "batch_stats": batch_stats,
        "opt_state": tx.init(params),
        "ema_params": copy(params),
        "ema_batch_stats": copy(batch_stats),
        "ssl": {
            "thr": threshold.init(num_train, num_classes, tcfg),
            "p_model": jnp.full((num_classes,), 1.0 / num_classes, jnp.float32),
            # class marginal of the labeled set (distribution alignment target); the loop sets it per cycle
            "p_target": jnp.full((num_classes,), 1.0 / num_classes, jnp.float32),
        },
        "n_active": jnp.zeros((), jnp.int32),
        "best": {"params": copy(params), "batch_stats": copy(batch_stats)},
    }


def ema_variables(state: dict) -> dict:
    return {"params": state["ema_params"], "batch_stats": state["ema_batch_stats"]}


@jax.jit
def snapshot_best(state: dict) -> dict:
    """Keep the current EMA variables as the cycle's best-by-validation model."""
    return {**state, "best": ema_variables(state)}


@partial(jax.jit, static_argnums=0)
def _apply_cycle_inputs(threshold: Threshold, state, is_labeled, n_active, p_target):
    ssl = {**state["ssl"], "p_target": p_target, "thr": threshold.leave_pool(state["ssl"]["thr"], is_labeled)}
    return {**state, "n_active": n_active, "ssl": ssl}


def set_cycle_inputs(state: dict, labeled, labels, n_active: int, num_classes: int, sharding,
                     threshold: Threshold) -> dict:
    """What a cycle's labeled set feeds the step: N_A (the latest round's count), the labeled class marginal
    (distribution alignment), and the threshold state with labeled rows out of the pool. All state, so
    checkpoints and resumes carry it; fixed shapes, so nothing recompiles."""
    is_labeled = np.zeros(labels.shape, bool)
    is_labeled[labeled] = True
    p_target = np.bincount(labels[labeled], minlength=num_classes).astype(np.float32) / len(labeled)
    args = jax.device_put((is_labeled, np.int32(n_active), p_target), sharding)
    return _apply_cycle_inputs(threshold, state, *args)
