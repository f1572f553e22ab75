"""The one generic loop: setup -> restore -> cycles of (train -> eval -> checkpoint -> acquire -> oracle)
-> summary.

The pieces are defined once, before the loop (nanodo's shape): `setup` builds everything that stays fixed
for a run (data, mesh, model, jitted steps, scorer, writer, checkpointer) into one `Run`; `train_cycle`,
`finish_cycle`, `acquire` and `summarize` are the loop's steps; `Book` (bookkeeping.py) holds the host-side
record that checkpoints carry. All randomness derives from (seed, step or cycle, global example index); all
side effects (host I/O, checkpoints, printing) live here, the steps stay pure.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from boostmis_jax import acquisition, defaults, export, oracle, parallel, reporting, selfsup
from boostmis_jax.bookkeeping import Book, config_changes, data_fingerprint
from boostmis_jax.checkpointing import Checkpointer
from boostmis_jax.data import load_dataset
from boostmis_jax.data.split import ensure_split
from boostmis_jax.errors import UserError
from boostmis_jax.evaluate import (
    classification_metrics,
    minority_class,
    predict_split,
    threshold_metrics,
)
from boostmis_jax.models import build_model
from boostmis_jax.sampling import balanced_rows_for_step, rows_for_step
from boostmis_jax.state import (
    Cycles,
    ema_variables,
    init_state,
    make_optimizer,
    make_schedule,
    set_cycle_inputs,
    snapshot_best,
)
from boostmis_jax.steps import make_predict, make_preprocess, make_train_step, uses_unlabeled
from boostmis_jax.thresholds import get_threshold, threshold_config

__all__ = ["Interrupted", "run", "set_cycle_inputs"]


class Interrupted(Exception):
    """Raised after SIGTERM/SIGINT once the state is checkpointed."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"interrupted by signal {signum} at step {step}")
        self.signum, self.step = signum, step


# ======================================================================================================
# Setup: everything fixed for the run, built once
# ======================================================================================================
@dataclasses.dataclass
class Run:
    cfg: Any
    workdir: Path
    ds: Any
    mesh: Any
    model: Any
    cycles: Cycles
    cycle_budget: int                   # 2K: rows annotated per round
    train_step: Any
    predict_probs: Any
    scorer: Any
    writer: Any
    ckpt: Checkpointer
    compiles: dict
    t_start: float
    say: Any
    side: reporting.Background = dataclasses.field(default_factory=reporting.Background)  # the plots
    timer: reporting.PhaseTimer = dataclasses.field(default_factory=reporting.PhaseTimer)  # summary's timing
    stop: dict = dataclasses.field(default_factory=lambda: {"sig": None})
    old_handlers: dict = dataclasses.field(default_factory=dict)
    _pool: Any = None

    @property
    def rep(self):
        return parallel.replicated(self.mesh)

    @property
    def eval_batch(self) -> int:
        n_dev = self.mesh.devices.size
        return -(-int(self.cfg.train.eval_batch_size) // n_dev) * n_dev

    def pool(self):
        """The whole train set, padded to the scorer's chunk layout, preprocessed on device (once per run)."""
        if self._pool is None:
            x, valid = parallel.pad_rows(self.ds.train_x, self.scorer.chunk * self.mesh.devices.size)
            xs = jax.jit(make_preprocess(self.ds.kind))(parallel.put_global(x, self.mesh))
            self._pool = (xs, valid)
        return self._pool

    def should_stop(self, step: int, every: int = 1) -> bool:
        """Whether a signal asks every process to stop now (agreed at multiples of `every`)."""
        if jax.process_count() > 1 and step % every:
            return False
        return parallel.any_process(self.stop["sig"] is not None)

    def save(self, step: int, state: dict, book: Book) -> None:
        book.wall_time_s += time.time() - self.t_start
        self.t_start = time.time()
        with self.timer("checkpoint"):
            self.ckpt.save(step + selfsup.ckpt_offset(self.cfg, book.phase), state, book.to_json())

    def interrupt(self, step: int) -> Interrupted:
        self.ckpt.wait()
        return Interrupted(self.stop["sig"] or signal.SIGTERM, step)

    def close(self) -> None:
        """Handlers back, writer closed, plots finished, then the checkpointer: the last save, then the
        workdir lock."""
        try:
            for s, h in self.old_handlers.items():
                signal.signal(s, h)
            if self.writer is not None:
                self.writer.close()
            self.side.close()
        finally:
            self.ckpt.close()


def setup(cfg, workdir: Path, t_start: float) -> tuple[Run, Any]:
    """Data, mesh, model, jitted steps, scorer, checkpointer and signal handlers; (run, optimizer)."""
    main_proc = parallel.is_main_process()
    say = print if main_proc else (lambda *a, **k: None)
    ds = load_dataset(cfg.data)
    mesh = parallel.make_mesh()
    parallel.check_divisible("train.batch_size", int(cfg.train.batch_size), mesh)
    say(f"boostmis_jax: {ds.name} ({ds.kind}, {len(ds.train_y)} train / {len(ds.val_y)} val / "
        f"{len(ds.test_y)} test, {ds.num_classes} classes) on {mesh.devices.size} {jax.default_backend()} "
        f"device(s), {jax.process_count()} process(es)")
    model = build_model(cfg.model, ds.num_classes)
    cycles = Cycles.from_config(cfg.train.steps, cfg.al.steps_per_cycle)
    cycles = cycles._replace(lead=int(selfsup.zero_label(cfg)))  # zero labels: cycle 0 trains nothing
    selectors = cfg.al.selectors
    cycle_budget = max(1, acquisition.round_size(selectors, int(cfg.al.budget)))
    training = build_training(cfg, model, kind=ds.kind, mean=ds.mean, std=ds.std,
                              num_train=len(ds.train_y), num_classes=ds.num_classes)
    compiles = {"train_step": 0, "predict": 0}

    def counted(name, fn):
        def wrapper(*a):
            compiles[name] += 1  # runs only while tracing
            return fn(*a)
        return wrapper

    rep = parallel.replicated(mesh)
    predict = make_predict(model, ds.kind, ds.mean, ds.std)
    scorer = acquisition.make_scorer(
        make_predict(model, ds.kind, ds.mean, ds.std, preprocessed=True), selectors=selectors,
        budget=int(cfg.al.budget), chunk=cfg.al.chunk, knn_k=cfg.al.knn_k, knn_block=cfg.al.knn_block,
        vat_xi=cfg.al.vat_xi, vat_eps=cfg.al.vat_eps, vat_ip=cfg.al.vat_ip, density=cfg.al.density,
        candidates=cfg.al.candidates, batch=cfg.al.batch, batch_beta=cfg.al.batch_beta,
        flip_target=cfg.al.aus_flip_target, num_classes=ds.num_classes, balance=cfg.al.balance,
        switch_per_class=cfg.al.switch_per_class)
    from boostmis_jax.workdir import prepare as prepare_workdir
    # made and locked only once the data and the whole config are known to be good; Run.close releases it
    ckpt = Checkpointer(workdir, keep=int(cfg.checkpoint.keep), lock=prepare_workdir(workdir))
    r = Run(cfg=cfg, workdir=workdir, ds=ds, mesh=mesh, model=model, cycles=cycles, cycle_budget=cycle_budget,
            train_step=jax.jit(counted("train_step", training.step), out_shardings=(rep, rep), donate_argnums=0),
            predict_probs=jax.jit(counted("predict", lambda v, x: jax.nn.softmax(predict(v, x)[0], -1)),
                                  out_shardings=rep),
            scorer=scorer, writer=None, ckpt=ckpt,
            compiles=compiles, t_start=t_start, say=say)
    r.old_handlers = {s: signal.signal(s, lambda signum, frame: r.stop.update(sig=signum))
                      for s in (signal.SIGTERM, signal.SIGINT)}
    return r, selfsup.wrap_init(cfg, model, training.init)


class Training(NamedTuple):
    tx: Any                      # the optimizer
    init: Any                    # sample_x -> fresh state
    step: Any                    # (state, batch) -> (state, metrics), not yet jitted


def build_training(cfg, model, *, kind: str, mean, std, num_train: int, num_classes: int) -> Training:
    """The optimizer, state initializer and SSL step for `cfg`: the one place that hands the config's
    sections down to them (benchmarks and tests build theirs here too)."""
    cycles = Cycles.from_config(cfg.train.steps, cfg.al.steps_per_cycle)
    cycle_budget = max(1, acquisition.round_size(cfg.al.selectors, int(cfg.al.budget)))
    schedule = make_schedule(float(cfg.train.lr), cycles, int(cfg.train.warmup_steps))
    tx = make_optimizer(schedule, momentum=cfg.train.momentum, nesterov=cfg.train.nesterov,
                        weight_decay=cfg.train.weight_decay)
    threshold = get_threshold(cfg.ssl.threshold)
    tcfg = threshold_config(cfg.ssl, cycle_budget=cycle_budget)

    def init_fn(sample_x):
        return init_state(model, tx, sample_x, seed=int(cfg.seed), num_train=num_train,
                          num_classes=num_classes, threshold=threshold, tcfg=tcfg)

    step = make_train_step(model, tx, schedule, ssl=cfg.ssl, aug=cfg.aug, kind=kind, mean=mean, std=std,
                           seed=int(cfg.seed), ema_decay=float(cfg.train.ema_decay), cycle_budget=cycle_budget)
    return Training(tx, init_fn, step)


# Programs that run once per run (the state initializer) are compiled without LLVM's optimizations: on
# XLA:CPU the initializer (threefry + truncated normals for every kernel) takes 2.5 s (4-6 s under load)
# to compile at the default level and 0.5-1 s at level 0, and it runs for a few milliseconds
# (benchmarks/compile_time.py: init vs init_default_level; benchmarks/NOTES.md, "Cold start").
RUN_ONCE = {"xla_backend_optimization_level": 0}


def fresh_state(init_fn, sample_x, sharding) -> dict:
    """`init_fn(sample_x)` compiled as a run-once program, its output laid out as `sharding`."""
    return jax.jit(lambda: init_fn(sample_x), out_shardings=sharding, compiler_options=RUN_ONCE)()


def restore_or_start(r: Run, init_fn) -> tuple[dict, Book]:
    """The latest checkpoint's (state, book), or a fresh state and the initial split."""
    cfg, ds = r.cfg, r.ds
    sample = jnp.zeros((1,) + ds.train_x.shape[1:], jnp.float32)
    state = fresh_state(init_fn, sample, r.rep)
    fingerprint = data_fingerprint(ds.train_x, ds.train_y, ds.val_x, ds.val_y, ds.test_x, ds.test_y)
    meta = r.ckpt.restore_meta()
    if meta is not None:
        check_resumable(r, Book.from_json(meta[1]), fingerprint)
    restored = r.ckpt.restore(state)
    if restored is not None:
        step, state, meta = restored
        book = Book.from_json(meta)
        check_resumable(r, book, fingerprint)
        step = selfsup.resume_step(cfg, state, book)
        r.say(f"resuming from step {step} (cycle {book.cycle}, phase {book.phase}) in {r.workdir}")
    else:
        split = parallel.on_process0(lambda: ensure_split(r.workdir, cfg.data, ds.train_y, int(cfg.seed),
                                                          groups=ds.train_groups))
        book = Book(labeled=[int(i) for i in parallel.broadcast_rows(split, len(ds.train_y))],
                    config=cfg.to_dict(), data_fingerprint=fingerprint, phase=selfsup.first_phase(cfg))
    r.timer = reporting.PhaseTimer(book.timing)  # counts on from the checkpoint's seconds
    r.writer = reporting.MetricsWriter(r.workdir / "metrics.jsonl", resume_step=step if restored else None)
    return state, book


def check_resumable(r: Run, book: Book, fingerprint: str) -> None:
    """A checkpoint continues only under the config and data it was trained with; more al.cycles on a
    finished run extend it (the next acquisition starts), fewer than it already trained are refused."""
    where = f"a new --workdir, or the old values, to resume {r.workdir}"
    if book.data_fingerprint and book.data_fingerprint != fingerprint:
        raise UserError(f"the data differs from the data this run was trained on (data.path="
                        f"{r.cfg.data.path!r}, fingerprint {book.data_fingerprint} -> {fingerprint}); use {where}")
    changes = config_changes(book.config, r.cfg.to_dict(), defaults.get_config().to_dict()) if book.config else []
    done = len(book.history) - 1 + r.cycles.lead  # acquisition rounds answered
    if int(r.cfg.al.cycles) < done:
        changes.append(f"al.cycles: this run already finished {done} > {int(r.cfg.al.cycles)}")
    if changes:
        raise UserError(f"config differs from the checkpoint's: {'; '.join(changes)}; use {where}")
    if book.phase == "done" and int(r.cfg.al.cycles) > book.cycle:
        r.say(f"extending the finished run from {book.cycle} to {int(r.cfg.al.cycles)} acquisition cycles")
        book.phase = "acquire"
    book.config = r.cfg.to_dict()


# ======================================================================================================
# The loop
# ======================================================================================================
def run(cfg, workdir: str) -> dict:
    """Train (and, with al.cycles > 0, actively annotate) as `cfg` says, in `workdir`; rerun to resume."""
    t_start = time.time()
    defaults.validate(cfg)
    parallel.init_distributed(**cfg.parallel)
    r, init_fn = setup(cfg, Path(workdir), t_start)
    try:
        state, book = restore_or_start(r, init_fn)
        selfsup.use_held_out(r, book)  # no labeled val split: validation from held-out answers
        while book.phase != "done":
            state, waiting = advance(r, state, book)
            if waiting:
                r.ckpt.wait()
                return {"status": "waiting_for_labels", "cycle": book.cycle}
        r.ckpt.wait()
        return summarize(r, book, int(state["step"]))
    finally:
        r.close()


def advance(r: Run, state: dict, book: Book) -> tuple[dict, bool]:
    """Run the book's current phase; True = waiting for a person's labels (the files oracle's CSV)."""
    if book.phase in selfsup.PHASES:  # before any classifier: selfsup stage, zero-label first round
        with r.timer("selfsup"):
            return selfsup.run_phase(r, state, book)
    if book.phase == "train":
        with r.timer("train"):
            state = train_cycle(r, state, book)
        return finish_cycle(r, state, book), False
    return state, not acquire(r, state, book)


# ======================================================================================================
# The loop's steps
# ======================================================================================================
class LateMetrics:
    """Train metrics fetched one step late, so the host never blocks on the step it just dispatched."""

    def __init__(self, writer, bar, cycle: int, n_labeled: int, perf: reporting.Throughput):
        self.writer, self.bar, self.tags = writer, bar, {"cycle": cycle, "labeled": n_labeled}
        self.perf = perf
        self.pending, self.last = None, {}

    def hold(self, step: int, metrics: dict) -> None:
        self.pending = (step, metrics)

    def flush(self) -> None:
        if self.pending is None:
            return
        step, m = self.pending
        self.pending = None
        vals = {f"train/{k}": float(v) for k, v in jax.device_get(m).items()}
        if any(math.isnan(v) for v in vals.values()):
            self.bar.close()  # the error line must be the last thing on stderr
            raise UserError(f"training diverged at step {step} (NaN loss); lower --config.train.lr or check "
                            f"the input data for extreme values")
        perf = self.perf.row(step)
        self.writer.write(step, {**vals, **perf, **self.tags})
        self.last = vals
        post = {"loss": f"{vals['train/loss']:.3f}"}
        if "perf/img_per_s" in perf:
            post["img/s"] = f"{perf['perf/img_per_s']:.0f}"
        if "train/mask_rate" in vals:
            post.update(mask=f"{vals['train/mask_rate']:.2f}", tau=f"{vals['train/threshold']:.3f}")
        self.bar.update(0, **post)


def batch_maker(r: Run, book: Book):
    """step -> host batch for the current cycle: a pure function of (seed, cycle, step)."""
    ds, seed, cycle = r.ds, int(r.cfg.seed), book.cycle
    labeled = np.asarray(book.labeled, np.int64)
    unlabeled = np.setdiff1d(np.arange(len(ds.train_y)), np.asarray(book.labeled + book.val_rows, np.int64))
    if len(unlabeled) == 0:  # the oracle labeled the whole pool: consistency runs on labeled rows
        unlabeled = labeled
    labels = book.labels(ds.train_y)
    B = int(r.cfg.train.batch_size)
    uB = int(r.cfg.ssl.uratio) * B
    start = r.cycles.start_step(cycle)
    use_u = uses_unlabeled(r.cfg.ssl)

    balanced = r.cfg.train.labeled_sampling == "class_balanced"

    def make_batch(s: int) -> dict:
        if balanced:
            il = balanced_rows_for_step(labeled, labels, B, s - start, seed=seed, cycle=cycle, stream=0)
        else:
            il = rows_for_step(labeled, B, s - start, seed=seed, cycle=cycle, stream=0)
        b = {"xl": ds.train_x[il], "yl": labels[il]}
        if use_u:
            iu = rows_for_step(unlabeled, uB, s - start, seed=seed, cycle=cycle, stream=1)
            b.update(xu=ds.train_x[iu], iu=iu.astype(np.int32), yu=ds.train_y[iu].astype(np.int32))
        return b

    return make_batch, len(ds.train_y) - len(labeled)


def best_variables(state: dict, book: Book) -> dict:
    """The cycle's best-by-validation EMA weights (the EMA weights before any validation)."""
    return state["best"] if book.best_val is not None else ema_variables(state)


def evaluate(r: Run, variables: dict, split: str) -> tuple[dict, np.ndarray]:
    x, y = getattr(r.ds, f"{split}_x"), getattr(r.ds, f"{split}_y")
    probs = predict_split(r.predict_probs, variables, x, batch=r.eval_batch, mesh=r.mesh)
    minority = minority_class(r.ds.train_y, r.ds.num_classes, fallback=r.ds.val_y)
    return classification_metrics(probs, y, r.ds.num_classes, minority), probs


def scalars(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}


def train_cycle(r: Run, state: dict, book: Book) -> dict:
    """Train the current cycle to its end step: log, validate, checkpoint, honour signals."""
    t = r.cfg.train
    labels = book.labels(r.ds.train_y)
    state = set_cycle_inputs(state, np.asarray(book.labeled), labels, book.n_latest, r.ds.num_classes, r.rep,
                             get_threshold(r.cfg.ssl.threshold))
    make_batch, n_unlabeled = batch_maker(r, book)
    step, end = int(state["step"]), r.cycles.end_step(book.cycle)
    r.say(f"cycle {book.cycle}: {len(book.labeled)} labeled, {n_unlabeled} unlabeled, steps {step}->{end}")
    bar = reporting.Progress(total=end, initial=step, desc=f"cycle {book.cycle}")
    images = int(t.batch_size) * (1 + 2 * int(r.cfg.ssl.uratio) if uses_unlabeled(r.cfg.ssl) else 1)
    perf = reporting.Throughput(step, images, r.timer, lambda: book.wall_time_s + time.time() - r.t_start)
    late = LateMetrics(r.writer, bar, book.cycle, len(book.labeled), perf)
    for s, batch in parallel.prefetch(make_batch, range(step, end), r.mesh):
        n_compiled, t0 = r.compiles["train_step"], time.perf_counter()
        state, m = r.train_step(state, batch)
        if r.compiles["train_step"] != n_compiled:  # this call traced and compiled (or read the cache)
            r.timer.record("compile", time.perf_counter() - t0)
        late.flush()  # the previous logged step's metrics, now ready
        step = s + 1
        bar.update(1)
        if step % int(t.log_every) == 0 or step == end:
            late.hold(step, m)
        if step % int(t.eval_every) == 0 or step == end:
            late.flush()
            state = validate(r, state, book, step, bar)
        if step % int(r.cfg.checkpoint.every_steps) == 0 and step != end:
            late.flush()  # a logged row must never be older than the checkpoint
            r.save(step, state, book)
        if step != end and r.should_stop(step, int(t.log_every)):
            late.flush()
            r.save(step, state, book)
            bar.close()
            raise r.interrupt(step)
    late.flush()
    bar.close()
    book.tau = late.last.get("train/threshold", book.tau)
    return state


def validate(r: Run, state: dict, book: Book, step: int, bar) -> dict:
    """Validation macro-F1 of the EMA weights; keep them as the cycle's best when they improve it."""
    with r.timer("eval"):
        val, _ = evaluate(r, ema_variables(state), "val")
    if book.best_val is None or val["macro_f1"] > book.best_val:
        book.best_val = val["macro_f1"]
        state = snapshot_best(state)
    r.writer.write(step, {**scalars("eval", val), "cycle": book.cycle, "labeled": len(book.labeled)})
    bar.update(0, val_f1=f"{val['macro_f1']:.3f}")
    return state


def finish_cycle(r: Run, state: dict, book: Book) -> dict:
    """Test the best-by-val weights, record the cycle, write its plots, decide what comes next, save."""
    step = int(state["step"])
    variables = best_variables(state, book)
    with r.timer("eval"):
        test, test_probs = evaluate(r, variables, "test")
        val, val_probs = evaluate(r, variables, "val")
        test.update(threshold_metrics(val_probs, r.ds.val_y, test_probs, r.ds.test_y, r.ds.num_classes))
        if r.ds.official_test_y is not None:   # data.test_from_train: the source's own test split beside it
            test["official"] = evaluate(r, variables, "official_test")[0]
    compiles = {**r.compiles, "scorer": r.scorer.compiles}
    counts = np.bincount(book.labels(r.ds.train_y)[np.asarray(book.labeled)], minlength=r.ds.num_classes)
    book.history.append({"cycle": book.cycle, "labeled": len(book.labeled), "step": step,
                         "n_active": len(book.oracle_labels), "test": test, "val": val, "compiles": compiles,
                         "labeled_per_class": [int(v) for v in counts]})
    r.writer.write(step, {**scalars("test", test), **scalars("val", val), "cycle": book.cycle,
                          "labeled": len(book.labeled), "compiles/train_step": compiles["train_step"],
                          "compiles/scorer": compiles["scorer"]})
    r.say(f"cycle {book.cycle} done at step {step}: test macro-F1 {test['macro_f1']:.4f}, accuracy "
          f"{test['accuracy']:.4f}, AUC {test['auc']:.4f} ({len(book.labeled)} labels)")
    if parallel.is_main_process():
        write_cycle_plots(r, book, state, test_probs)
    book.phase = "acquire" if book.cycle < int(r.cfg.al.cycles) else "done"
    r.save(step, state, book)
    if book.phase != "done" and r.should_stop(step):
        raise r.interrupt(step)
    return state


def write_cycle_plots(r: Run, book: Book, state: dict, test_probs: np.ndarray) -> None:
    """The portable model (DIR/model/) and test predictions of the cycle just finished, now; its confusion
    matrix, ROC, threshold and learning curve PNGs on the background thread (finished by `Run.close`)."""
    h = book.history[-1]
    export.write_cycle_outputs(r.workdir, ds=r.ds, model_cfg=r.cfg.model, data_cfg=r.cfg.data,
                               variables=jax.device_get(best_variables(state, book)), test_probs=test_probs,
                               step=h["step"], cycle=h["cycle"], labeled=h["labeled"],
                               cycle_steps=[c["step"] for c in book.history], submit=r.side.submit)
    if int(r.cfg.al.cycles) > 0:
        curve = [{"labeled": c["labeled"], "test/macro_f1": c["test"]["macro_f1"]} for c in book.history]
        r.side.submit(lambda: reporting.plot_learning_curve(r.workdir / "learning_curve.png", curve))


def acquire(r: Run, state: dict, book: Book) -> bool:
    """Score the pool, ask the oracle, grow the labeled set. False = waiting for a person's labels.

    No save after the answers: the next periodic save records the new labeled set; a run killed before it
    resumes from the 'acquire' checkpoint and recomputes the same picks deterministically."""
    ds, n = r.ds, len(r.ds.train_y)
    left = n - len(book.labeled) - len(book.val_rows)
    if left == 0:
        r.say(f"cycle {book.cycle}: every train row is labeled; the run ends here")
        book.phase = "done"
        return True
    if left < r.cycle_budget:
        print(f"warning: {left} unlabeled rows left, fewer than al.budget x selectors = {r.cycle_budget}; "
              f"this round labels all of them", file=sys.stderr)
    t0 = time.time()
    with r.timer("acquisition"):
        xs, valid = r.pool()
        labeled = np.zeros(valid.shape, bool)
        labeled[np.asarray(book.labeled + book.val_rows, np.int64)] = True  # held-out val rows: never re-asked
        key = jax.random.fold_in(jax.random.key(int(r.cfg.seed)), 10_000 + book.cycle)
        variables = best_variables(state, book)
        _, val_probs = evaluate(r, variables, "val")  # calibrates the estimated classes (al.balance)
        queries, diag = acquisition.acquire_round(
            r.scorer, variables, xs, parallel.put_global(valid & ~labeled, r.mesh),
            parallel.put_global(labeled, r.mesh), key, num_classes=ds.num_classes, ids=ds.train_ids,
            tau=book.tau, labels=book.labels(ds.train_y), true_y=ds.train_y, val_probs=val_probs, val_y=ds.val_y)
        book.history[-1]["acquisition"] = diag
    r.say(f"cycle {book.cycle}: scored {n} pool samples in {time.time() - t0:.1f}s, {len(queries)} picks "
          f"({', '.join(sorted({q.selector for q in queries}))})")
    answers = oracle.ask(r.cfg.al.oracle, ds, book, queries, r.workdir)
    if answers is None:
        return False
    selfsup.hold_out_answers(r, book, answers)
    return True


def summarize(r: Run, book: Book, step: int) -> dict:
    """summary.json (process 0) and the final report."""
    last = book.history[-1]
    summary = {"test": last["test"], "val": last["val"], "labeled": last["labeled"],
               "n_active": len(book.oracle_labels), "steps": step, "cycles": book.history,
               "picks": {str(c): p for c, p in book.picks.items()},
               "devices": r.mesh.devices.size, "processes": jax.process_count(),
               "backend": jax.default_backend(), "compiles": {**r.compiles, "scorer": r.scorer.compiles},
               "config": r.cfg.to_dict(), "versions": export.versions(),
               "wall_time_s": book.wall_time_s + time.time() - r.t_start,
               "timing": r.timer.rounded()}  # seconds per phase, this run's processes together
    if parallel.is_main_process():
        reporting.write_json_atomic(r.workdir / "summary.json", reporting.to_jsonable(summary))
        print_report(summary, r.ds, r.workdir)
    return summary


def print_report(summary: dict, ds, workdir: Path) -> None:
    t = summary["test"]
    print("\n" + "=" * 72)
    print(f"BoostMIS final report -- {ds.name}, {summary['labeled']} labels, {summary['steps']} steps, "
          f"{summary['devices']} device(s), {summary['wall_time_s']:.0f}s")
    print(f"test  accuracy {t['accuracy']:.4f}  balanced acc {t['balanced_accuracy']:.4f}  "
          f"macro-F1 {t['macro_f1']:.4f}  AUC {t['auc']:.4f}")
    print("per-class recall: " + ", ".join(f"{n}={r:.3f}" for n, r in zip(ds.class_names, t["per_class_recall"])))
    if len(summary["cycles"]) > 1:
        print("learning curve (labels -> test macro-F1): " + ", ".join(
            f"{h['labeled']}->{h['test']['macro_f1']:.3f}" for h in summary["cycles"]))
    print(f"outputs: {workdir}/summary.json, {workdir}/metrics.jsonl")
    print("=" * 72)
    sys.stdout.flush()
