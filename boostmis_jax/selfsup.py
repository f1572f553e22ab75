"""Starting from zero labels: a self-supervised stage on the pool, then a first round picked without labels.

Objective: SimCLR's NT-Xent (Chen et al., ICML 2020) on two augmented views of each pool image, a small
MLP projection head on the model's embedding; the embedding (before the head, L2-normalised) is what the
first selection reads. TypiClust (Hacohen et al., ICML 2022) and ProbCover (Yehuda et al., NeurIPS 2022)
pick their cold-start rounds on exactly such a SimCLR embedding (SCAN's pretext task: temperature 0.1,
projection 128, SGD), so we use the objective their evidence was gathered with. BYOL/DINO need a momentum
teacher and, at our batch sizes on 28x28 scans, have no cold-start evidence we could cite.

The two views are two independent draws of the strong view already used by the SSL step (augment/),
built on device from per-example keys (seed, selfsup step, stream, global position), so the step is
identical on any device count; the step is jitted once over the global batch (BatchNorm and the
similarity matrix see every row) like the SSL step. Its state lives in the train state under "selfsup"
(step, backbone params/batch_stats, head, optimizer), so the run's checkpoints carry it.

Phases of a run (bookkeeping.PHASES): "selfsup" (selfsup.steps > 0) -> "initial" (data.num_labels = 0:
the first round's picks, queries/cycle_0.csv) -> "train" ... Checkpoints of the selfsup phase are
numbered by its step; from its end on, a checkpoint's number is selfsup.steps + the train step. Rows of
metrics.jsonl from the selfsup phase carry step = selfsup step - selfsup.steps (<= 0: before training's
step 0) and `selfsup/step`.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from boostmis_jax import parallel, reporting
from boostmis_jax.augment import make_views
from boostmis_jax.defaults import INITIAL  # al.initial choices (checked in defaults.check_selfsup)
from boostmis_jax.errors import UserError
from boostmis_jax.sampling import rows_for_step
from boostmis_jax.steps import example_keys, make_normalize, make_predict, make_preprocess

PHASES = ("selfsup", "initial")
STREAMS = (2, 3)         # per-example key streams of the two views (the SSL step uses 0 and 1)
ROW_STREAM = 2           # rows_for_step stream of the selfsup batches


# ======================================================================================================
# Config
# ======================================================================================================
def steps_of(cfg) -> int:
    return int(cfg.selfsup.steps)


def zero_label(cfg) -> bool:
    """A run that starts with no labeled row: the first round is picked without labels."""
    return int(cfg.data.num_labels) == 0 and not str(cfg.data.split_file or "")


def first_phase(cfg) -> str:
    if steps_of(cfg) > 0:
        return "selfsup"
    return "initial" if zero_label(cfg) else "train"


# ======================================================================================================
# The objective and its diagnostics (pure)
# ======================================================================================================
def l2_normalize(x: jnp.ndarray, eps: float = 1e-8) -> jnp.ndarray:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def nt_xent(z1: jnp.ndarray, z2: jnp.ndarray, temperature: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    """SimCLR's normalized-temperature cross-entropy over the 2B views (each row's positive is its other
    view, the 2B - 2 other rows are negatives); (loss, top-1 accuracy of finding the positive)."""
    b = z1.shape[0]
    z = l2_normalize(jnp.concatenate([z1, z2], 0).astype(jnp.float32))
    sim = z @ z.T / temperature
    n = 2 * b
    sim = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, sim)
    pos = (jnp.arange(n) + b) % n
    logp = jax.nn.log_softmax(sim, axis=-1)
    loss = -jnp.mean(jnp.take_along_axis(logp, pos[:, None], axis=1))
    top1 = jnp.mean((jnp.argmax(sim, axis=-1) == pos).astype(jnp.float32))
    return loss, top1


def uniformity(z: jnp.ndarray, t: float = 2.0) -> jnp.ndarray:
    """Wang & Isola (ICML 2020): log E exp(-t |zi - zj|^2) over pairs of L2-normalised rows (lower = more
    uniform on the sphere; about -4 in high dimension for t=2, 0 for a collapse)."""
    z = l2_normalize(z.astype(jnp.float32))
    d2 = jnp.maximum(2.0 - 2.0 * z @ z.T, 0.0)
    n = z.shape[0]
    off = ~jnp.eye(n, dtype=bool)
    return jnp.log(jnp.sum(jnp.where(off, jnp.exp(-t * d2), 0.0)) / (n * (n - 1)))


def effective_rank(h: jnp.ndarray) -> jnp.ndarray:
    """Roy & Vetterli (2007): exp(entropy of the normalised singular values) of the centred batch of
    embeddings; 1 for a collapse to a line, the dimension for an isotropic cloud."""
    h = h.astype(jnp.float32)
    s = jnp.linalg.svd(h - jnp.mean(h, 0), compute_uv=False)
    p = s / jnp.maximum(jnp.sum(s), 1e-12)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-30)), 0.0)))


class Projection(nn.Module):
    """SimCLR's head g(h) = W2 relu(W1 h); the loss reads g(h), the selection reads h."""
    hidden: int
    dim: int

    @nn.compact
    def __call__(self, h):
        return nn.Dense(self.dim)(nn.relu(nn.Dense(self.hidden)(h)))


def make_optimizer(cfg_selfsup) -> tuple[optax.GradientTransformation, Callable]:
    """SGD + Nesterov, cosine decay to 0 over selfsup.steps, weight decay on kernels (as the task's)."""
    steps = max(1, int(cfg_selfsup.steps))
    schedule = optax.cosine_decay_schedule(float(cfg_selfsup.lr), steps)

    def decay_mask(params):
        return jax.tree_util.tree_map_with_path(lambda p, _: p[-1].key == "kernel", params)

    tx = optax.chain(optax.add_decayed_weights(float(cfg_selfsup.weight_decay), mask=decay_mask),
                     optax.sgd(schedule, momentum=0.9, nesterov=True))
    return tx, schedule


def init_selfsup(model, head: Projection, tx, sample_x, seed: int) -> dict:
    """The stage's state: its own backbone (keyed apart from the task model's init), head, optimizer."""
    k_model, k_head = jax.random.split(jax.random.fold_in(jax.random.key(seed), 77))
    variables = model.init(k_model, sample_x, train=False)
    emb = jax.eval_shape(lambda v: model.apply(v, sample_x, train=False)[1], variables)
    head_params = head.init(k_head, jnp.zeros(emb.shape, jnp.float32))["params"]
    params = {"model": variables["params"], "head": head_params}
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "batch_stats": variables.get("batch_stats", {}), "opt_state": tx.init(params)}


def make_selfsup_step(model, head: Projection, tx, schedule, *, aug, kind: str, mean, std, seed: int,
                      temperature: float) -> Callable:
    """(selfsup state, {"x": uint8 rows}) -> (state, metrics): two strong views, one forward over both,
    NT-Xent on the projections; diagnostics of the embedding h (effective rank) and of z (uniformity)."""
    views = make_views(kind, aug)
    pre = make_preprocess(kind)
    norm = make_normalize(kind, mean, std)
    temperature = float(temperature)

    def step(ss: dict, batch: dict) -> tuple[dict, dict]:
        k = ss["step"]
        x = pre(batch["x"])
        b = x.shape[0]
        _, v1 = views(example_keys(seed, k, STREAMS[0], b), x)
        _, v2 = views(example_keys(seed, k, STREAMS[1], b), x)
        inputs = norm(jnp.concatenate([v1, v2], 0))

        def loss_fn(params):
            (_, h), upd = model.apply({"params": params["model"], "batch_stats": ss["batch_stats"]}, inputs,
                                      train=True, mutable=["batch_stats"])
            h = h.astype(jnp.float32)
            z = head.apply({"params": params["head"]}, h)
            loss, top1 = nt_xent(z[:b], z[b:], temperature)
            return loss, (upd["batch_stats"], h, z, top1)

        (loss, (bs, h, z, top1)), grads = jax.value_and_grad(loss_fn, has_aux=True)(ss["params"])
        updates, opt_state = tx.update(grads, ss["opt_state"], ss["params"])
        new = {"step": k + 1, "params": optax.apply_updates(ss["params"], updates), "batch_stats": bs,
               "opt_state": opt_state}
        zn = l2_normalize(z)
        metrics = {"loss": loss, "top1": top1, "lr": schedule(k), "grad_norm": optax.tree.norm(grads),
                   "alignment": jnp.mean(jnp.sum((zn[:b] - zn[b:]) ** 2, -1)),
                   "uniformity": uniformity(z[:b]), "effective_rank": effective_rank(h[:b])}
        return new, metrics

    return step


# ======================================================================================================
# Wiring into train.run (the loop's side effects)
# ======================================================================================================
def embed_dim(model, sample_x) -> int:
    """The width of the model's embedding (the projection head's input), from shapes only."""
    emb = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), sample_x, train=False),
                                             sample_x, train=False)[1])
    return int(emb.shape[-1])


def make_head(cfg, model, sample_x) -> Projection:
    return Projection(hidden=embed_dim(model, sample_x), dim=int(cfg.selfsup.proj_dim))


def wrap_init(cfg, model, init_fn: Callable) -> Callable:
    """The run's state initializer, with the selfsup sub-state when the stage is on (else unchanged)."""
    if steps_of(cfg) == 0:
        return init_fn
    tx, _ = make_optimizer(cfg.selfsup)

    def init(sample_x):
        state = init_fn(sample_x)
        head = make_head(cfg, model, sample_x)
        return {**state, "selfsup": init_selfsup(model, head, tx, sample_x, int(cfg.seed))}

    return init


def ckpt_offset(cfg, phase: str) -> int:
    """What a checkpoint's number adds to the train step (see the module docstring)."""
    return 0 if phase == "selfsup" else steps_of(cfg)


def resume_step(cfg, state: dict, book) -> int:
    """The metrics.jsonl step of a restored checkpoint (rows after it are dropped and re-logged)."""
    if book.phase == "selfsup":
        return int(state["selfsup"]["step"]) - steps_of(cfg)
    return int(state["step"])


def run_phase(r, state: dict, book) -> tuple[dict, bool]:
    """One pre-training phase of `train.run`: (state, waiting_for_labels)."""
    if book.phase == "selfsup":
        return train_selfsup(r, state, book), False
    return state, not initial_round(r, state, book)


def _step_fn(r):
    """The jitted selfsup step of this run (built on first use, once)."""
    if getattr(r, "_selfsup_step", None) is None:
        cfg, ds = r.cfg, r.ds
        head = make_head(cfg, r.model, jnp.zeros((1,) + ds.train_x.shape[1:], jnp.float32))
        tx, schedule = make_optimizer(cfg.selfsup)
        step = make_selfsup_step(r.model, head, tx, schedule, aug=cfg.aug, kind=ds.kind, mean=ds.mean,
                                 std=ds.std, seed=int(cfg.seed), temperature=float(cfg.selfsup.temperature))
        r._selfsup_step = jax.jit(step, out_shardings=(r.rep, r.rep), donate_argnums=0)
    return r._selfsup_step


def train_selfsup(r, state: dict, book) -> dict:
    """selfsup.steps of NT-Xent on the whole train pool: log, checkpoint, honour signals, then plot and
    (selfsup.init) hand the backbone to the task model; the phase moves on to "initial" or "train"."""
    cfg, ds = r.cfg, r.ds
    total = steps_of(cfg)
    parallel.check_divisible("selfsup.batch_size", int(cfg.selfsup.batch_size), r.mesh)
    step_fn = _step_fn(r)
    pool = np.arange(len(ds.train_x))
    B, seed = int(cfg.selfsup.batch_size), int(cfg.seed)
    log_every, ck_every = int(cfg.train.log_every), int(cfg.checkpoint.every_steps)

    def make_batch(s: int) -> dict:
        return {"x": ds.train_x[rows_for_step(pool, B, s, seed=seed, cycle=0, stream=ROW_STREAM)]}

    s = int(state["selfsup"]["step"])
    r.say(f"self-supervised stage (SimCLR): {len(pool)} unlabeled images, steps {s}->{total}")
    bar = reporting.Progress(total=total, initial=s, desc="selfsup")
    pending = None

    def flush():
        nonlocal pending
        if pending is None:
            return
        k, m = pending
        pending = None
        vals = {f"selfsup/{n}": float(v) for n, v in jax.device_get(m).items()}
        if math.isnan(vals["selfsup/loss"]):
            bar.close()
            raise UserError(f"self-supervised stage diverged at step {k} (NaN loss); lower "
                            f"--config.selfsup.lr")
        r.writer.write(k - total, {**vals, "selfsup/step": k})
        bar.update(0, loss=f"{vals['selfsup/loss']:.3f}", erank=f"{vals['selfsup/effective_rank']:.1f}")

    for k, batch in parallel.prefetch(make_batch, range(s, total), r.mesh):
        ss, m = step_fn(state["selfsup"], batch)
        state = {**state, "selfsup": ss}
        flush()
        k += 1
        bar.update(1)
        if k % log_every == 0 or k == total:
            pending = (k, m)
        if k % ck_every == 0 and k != total:
            flush()
            r.save(k, state, book)
        if k != total and r.should_stop(k, log_every):
            flush()
            r.save(k, state, book)
            bar.close()
            raise r.interrupt(k)
    flush()
    bar.close()
    if bool(cfg.selfsup.init):
        state = init_task_model(state)
    book.phase = "initial" if zero_label(cfg) else "train"
    if parallel.is_main_process():
        path = r.workdir / "selfsup.png"
        r.side.submit(lambda: plot_selfsup(path, reporting.read_jsonl(r.workdir / "metrics.jsonl")))
    r.save(0, state, book)
    r.say(f"self-supervised stage done ({total} steps)"
          + ("; the task model starts from its backbone" if cfg.selfsup.init else ""))
    return state


@jax.jit
def init_task_model(state: dict) -> dict:
    """The task model's weights (and their EMA and best copies) := the self-supervised backbone."""
    ss = state["selfsup"]
    p, bs = ss["params"]["model"], ss["batch_stats"]
    copy = lambda t: jax.tree.map(jnp.array, t)
    return {**state, "params": copy(p), "batch_stats": copy(bs), "ema_params": copy(p),
            "ema_batch_stats": copy(bs), "best": {"params": copy(p), "batch_stats": copy(bs)}}


def plot_selfsup(path, rows: list[dict]) -> None:
    """selfsup.png: NT-Xent loss and positive top-1 (left), effective rank and uniformity (right)."""
    rows = [row for row in rows if "selfsup/loss" in row]
    if not rows:
        return
    fig = reporting._new_figure((10, 3.6))
    x = [row["selfsup/step"] for row in rows]
    panels = (("SimCLR objective", ("loss", "NT-Xent loss", "loss"),
               ("top1", "positive top-1", "top-1 of the positive view", "tab:orange")),
              ("embedding", ("effective_rank", "effective rank of h", "effective rank"),
               ("uniformity", "uniformity of z", "uniformity (lower = more uniform)", "tab:green")))
    for ax, (title, (k1, label1, y1), (k2, label2, y2, color)) in zip(fig.subplots(1, 2), panels):
        ax.plot(x, [row[f"selfsup/{k1}"] for row in rows], label=label1)
        ax.set_xlabel("self-supervised step")
        ax.set_ylabel(y1)
        twin = ax.twinx()
        twin.plot(x, [row[f"selfsup/{k2}"] for row in rows], color=color, label=label2)
        twin.set_ylabel(y2)
        ax.set_title(title)
    reporting._save_figure(fig, path)


# ======================================================================================================
# The first round without labels
# ======================================================================================================
def embed_pool(r, variables: dict) -> np.ndarray:
    """Eval-mode embeddings of every train row (L2-normalised), one jitted pass over the padded pool."""
    xs, valid = r.pool()
    predict = make_predict(r.model, r.ds.kind, r.ds.mean, r.ds.std, preprocessed=True)
    chunk = r.scorer.chunk * r.mesh.devices.size

    def f(v, x):
        parts_ = x.reshape((-1, chunk) + x.shape[1:])
        emb = jax.lax.map(lambda c: predict(v, c)[1], parts_)
        return l2_normalize(emb.reshape((-1,) + emb.shape[2:]))

    emb = jax.jit(f, out_shardings=r.rep)(variables, xs)
    return np.asarray(parallel.to_host(emb))[np.asarray(valid)]


def pick_initial(name: str, emb: np.ndarray | None, n: int, budget: int, seed: int, num_classes: int = 2
                 ) -> list[int]:
    """`budget` distinct rows of the n-row pool, by the `al.initial` selector (no label is read); ProbCover's
    radius is chosen by purity with as many k-means clusters as classes (its paper's choice)."""
    budget = min(budget, n)
    if name == "random":
        return [int(i) for i in np.random.default_rng([seed, 20_000]).permutation(n)[:budget]]
    key = jax.random.fold_in(jax.random.key(seed), 20_000)
    if name == "typiclust":
        from boostmis_jax.acquisition.typicality import typiclust_select
        idx = typiclust_select(jnp.asarray(emb), budget, key=key)
    else:
        from boostmis_jax.acquisition.coverage import probcover_select
        idx = probcover_select(jnp.asarray(emb), budget, key=key, clusters=num_classes)
    idx = [int(i) for i in np.asarray(idx)]
    if len(set(idx)) != len(idx) or len(idx) != budget:
        raise RuntimeError(f"al.initial={name} returned {len(idx)} rows ({len(set(idx))} distinct) for a "
                           f"budget of {budget}")
    return idx


def initial_round(r, state: dict, book) -> bool:
    """Cycle 0 of a zero-label run: pick the first rows to label with `al.initial` on the selfsup embedding,
    ask the oracle (queries/cycle_0.csv with al.oracle=files). False = waiting for a person's labels."""
    from boostmis_jax import oracle
    from boostmis_jax.oracle import Query

    cfg, ds = r.cfg, r.ds
    name = str(cfg.al.initial)
    budget = int(cfg.al.initial_budget) or r.cycle_budget
    emb = embed_pool(r, {"params": state["selfsup"]["params"]["model"],
                         "batch_stats": state["selfsup"]["batch_stats"]}) if name != "random" else None
    picks = pick_initial(name, emb, len(ds.train_x), budget, int(cfg.seed), ds.num_classes)
    queries = [Query(index=i, id=str(ds.train_ids[i]), selector=name, score=float(len(picks) - pos),
                     predicted=-1, selectors=(name,), confidence=None) for pos, i in enumerate(picks)]
    r.say(f"cycle 0: no labels yet; {len(picks)} first picks by {name}"
          + (" on the self-supervised embedding" if emb is not None else ""))
    answers = oracle.ask(cfg.al.oracle, ds, book, queries, r.workdir)
    if answers is None:
        return False
    hold_out_answers(r, book, answers)
    return True


# ======================================================================================================
# Validation without a labeled split: a share of each round's answers (data.val_share)
# ======================================================================================================
def use_held_out(r, book) -> None:
    """Once per run, after restore: whether validation (and, without a test split, the test metrics) come
    from held-out answers, and the held-out rows so far in place of the empty splits."""
    r._held_out = (len(r.ds.val_y) == 0, len(r.ds.test_y) == 0)
    _refresh(r, book)


def hold_out_answers(r, book, answers: dict[int, int]) -> None:
    """Without a labeled val split: hold out round(val_share x answers) of this round's answers, stratified
    by the answered class (largest remainder), seeded by (seed, cycle); they are never trained on or asked
    again. The test split is never touched."""
    if not getattr(r, "_held_out", (False, False))[0]:
        return
    from boostmis_jax.data.split import _allocate

    rows = np.array(sorted(answers), np.int64)
    ys = np.array([answers[int(i)] for i in rows], np.int64)
    share = float(r.cfg.data.val_share)
    total = min(len(rows) - 1, max(1, round(share * len(rows)))) if len(rows) >= 2 else 0
    classes, counts = np.unique(ys, return_counts=True)
    alloc = _allocate(counts, total, np.zeros_like(counts), counts)
    rng = np.random.default_rng([int(r.cfg.seed), 30_000, book.cycle])
    held = [int(i) for c, k in zip(classes, alloc, strict=True) for i in rng.permutation(rows[ys == c])[:k]]
    book.hold_out(held)
    _refresh(r, book)
    if not book.val_rows:
        raise UserError(f"no validation rows: the data has no labeled val split and round {book.cycle - 1} "
                        f"answered {len(rows)} row(s); raise --config.al.initial_budget to 2 or more, or "
                        f"add a labeled val folder")


def _refresh(r, book) -> None:
    val_empty, test_empty = r._held_out
    if not val_empty or not book.val_rows:
        return
    ds, idx = r.ds, np.asarray(book.val_rows, np.int64)
    x, y = ds.train_x[idx], book.labels(ds.train_y)[idx]
    ids = [ds.train_ids[i] for i in idx]
    ds.val_x, ds.val_y, ds.val_ids = x, y, ids
    if test_empty:
        ds.test_x, ds.test_y, ds.test_ids = x, y, ids
