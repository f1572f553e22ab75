"""Pure step functions. The loop jits each once; they never touch the host.

`make_train_step` builds the whole BoostMIS SSL step: per-example keys from (seed, step, global position),
weak/strong views on device, ONE forward pass over [labeled weak | unlabeled weak | unlabeled strong]
(BatchNorm sees the whole global batch under jit+NamedSharding, on any device count), the threshold
registry's mask, masked consistency, SGD update and EMA.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from boostmis_jax import losses
from boostmis_jax.augment import make_views
from boostmis_jax.thresholds import get_threshold, threshold_config


def make_preprocess(kind: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """uint8 images -> float [0,1] (augmentation space); features pass through."""
    if kind == "image":
        return lambda x: x.astype(jnp.float32) / 255.0
    return lambda x: x.astype(jnp.float32)


def make_normalize(kind: str, mean, std) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """Per-channel standardisation of [0,1] images with the train statistics (features arrive standardized)."""
    if kind == "image":
        m = jnp.asarray(mean, jnp.float32)
        s = jnp.asarray(std, jnp.float32)
        return lambda x: (x - m) / s
    return lambda x: x


def example_keys(seed: int, step, stream: int, n: int) -> jax.Array:
    """One key per example from (seed, step, stream, global position): independent of sharding."""
    k = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), stream)
    return jax.vmap(lambda i: jax.random.fold_in(k, i))(jnp.arange(n, dtype=jnp.uint32))


def uses_unlabeled(ssl) -> bool:
    """Whether the step consumes an unlabeled batch at all (not for threshold `none` or lambda_u = 0)."""
    return get_threshold(ssl.threshold).uses_unlabeled and float(ssl.lambda_u) > 0


def make_train_step(model, tx, schedule, *, ssl, aug, kind: str, mean, std, seed: int, ema_decay: float,
                    cycle_budget: int) -> Callable:
    """The SSL step for the `ssl` and `aug` sub-configs; `schedule` only feeds the logged learning rate.

    `cycle_budget` is 2K, the samples annotated per round (the threshold's N_A / 2K)."""
    thr = get_threshold(ssl.threshold)
    tcfg = threshold_config(ssl, cycle_budget=cycle_budget)
    views = make_views(kind, aug)
    pre = make_preprocess(kind)
    norm = make_normalize(kind, mean, std)
    hard = bool(ssl.hard_label)
    temperature = float(ssl.T)
    lambda_u = float(ssl.lambda_u)
    dist_align = bool(ssl.dist_align)
    da_m = float(ssl.da_momentum)
    fairness = float(ssl.fairness_weight)
    use_u = uses_unlabeled(ssl)

    def train_step(state: dict, batch: dict) -> tuple[dict, dict]:
        step = state["step"]
        xl, yl = batch["xl"], batch["yl"]
        bl = xl.shape[0]
        xl_w, _ = views(example_keys(seed, step, 0, bl), pre(xl))
        if use_u:
            xu, iu = batch["xu"], batch["iu"]
            bu = xu.shape[0]
            xu_w, xu_s = views(example_keys(seed, step, 1, bu), pre(xu))
            inputs = jnp.concatenate([xl_w, xu_w, xu_s], axis=0)
        else:
            inputs = xl_w
        inputs = norm(inputs)

        def loss_fn(params):
            (logits, _), upd = model.apply({"params": params, "batch_stats": state["batch_stats"]}, inputs,
                                           train=True, mutable=["batch_stats"])
            logits = logits.astype(jnp.float32)
            sup = losses.supervised_ce(logits[:bl], yl)
            aux = {"batch_stats": upd["batch_stats"], "sup": sup}
            if not use_u:
                return sup, aux
            lw = jax.lax.stop_gradient(logits[bl:bl + bu])
            ls = logits[bl + bu:]
            probs = jax.nn.softmax(lw, axis=-1)
            p_model = state["ssl"]["p_model"]
            if dist_align:
                p_model = da_m * p_model + (1 - da_m) * jnp.mean(probs, axis=0)
                probs = losses.align_distribution(probs, p_model, state["ssl"]["p_target"])
            valid = jnp.ones((bu,), bool)
            mask, tau, thr_state, thr_logs = thr.update(state["ssl"]["thr"], probs, iu, valid,
                                                         state["n_active"], tcfg)
            targets = losses.pseudo_targets(probs, hard=hard, temperature=temperature)
            maskf = mask.astype(jnp.float32)
            unsup = losses.consistency(ls, targets, maskf)
            loss = sup + lambda_u * unsup
            if fairness > 0:  # FreeMatch's self-adaptive fairness term (threshold_config enforces freematch)
                fair = losses.freematch_fairness(jax.nn.softmax(ls, axis=-1), maskf, thr_state["p_tilde"],
                                                 thr_state["label_hist"])
                loss = loss + fairness * fair
                thr_logs = {**thr_logs, "fairness_loss": fair}
            pred = jnp.argmax(probs, -1)
            yu = batch["yu"]
            known = (yu >= 0) & mask
            aux.update(unsup=unsup, mask_rate=jnp.mean(maskf), tau=tau, thr_logs=thr_logs,
                       ssl={**state["ssl"], "thr": thr_state, "p_model": p_model},
                       pseudo_acc=jnp.sum((pred == yu) & known) / jnp.maximum(jnp.sum(known), 1))
            return loss, aux

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        # EMA with the usual warm-up (decay ramps as (1+t)/(10+t)) so short runs do not evaluate the init.
        d = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
        ema = lambda e, p: d * e + (1.0 - d) * p
        new = dict(state)
        new.update(
            step=step + 1, params=params, batch_stats=aux["batch_stats"], opt_state=opt_state,
            ema_params=jax.tree.map(ema, state["ema_params"], params),
            ema_batch_stats=jax.tree.map(ema, state["ema_batch_stats"], aux["batch_stats"]),
        )
        metrics = {"loss": loss, "sup_loss": aux["sup"], "lr": schedule(step),
                   "grad_norm": optax.tree.norm(grads)}
        if use_u:
            new["ssl"] = aux["ssl"]
            metrics.update(unsup_loss=aux["unsup"], mask_rate=aux["mask_rate"], threshold=aux["tau"],
                           pseudo_acc=aux["pseudo_acc"], **aux["thr_logs"])
        return new, metrics

    return train_step


def make_bare_step(model, tx, *, kind: str, mean, std) -> Callable:
    """Plain supervised forward/backward/update, no augmentation: the benchmark's reference point."""
    pre = make_preprocess(kind)
    norm = make_normalize(kind, mean, std)

    def bare_step(state, batch):
        x = norm(pre(batch["x"]))

        def loss_fn(params):
            (logits, _), upd = model.apply({"params": params, "batch_stats": state["batch_stats"]}, x,
                                           train=True, mutable=["batch_stats"])
            return losses.supervised_ce(logits.astype(jnp.float32), batch["y"]), upd["batch_stats"]

        (loss, bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = dict(state)
        new.update(step=state["step"] + 1, params=optax.apply_updates(state["params"], updates),
                   batch_stats=bs, opt_state=opt_state)
        return new, {"loss": loss}

    return bare_step


def make_predict(model, kind: str, mean, std, *, preprocessed: bool = False) -> Callable:
    """Eval-mode forward (running BN statistics): (variables, x) -> (logits, embedding).

    With `preprocessed=True` the input is already in augmentation space ([0,1] images), which is where the
    VAT selector perturbs it.
    """
    pre = make_preprocess(kind)
    norm = make_normalize(kind, mean, std)

    def predict(variables, x):
        x = x if preprocessed else pre(x)
        logits, emb = model.apply(variables, norm(x), train=False)
        return logits.astype(jnp.float32), emb.astype(jnp.float32)

    return predict
