"""The one generic loop: setup -> restore -> cycles of (train -> eval -> checkpoint -> acquire -> oracle)
-> summary. All randomness derives from (seed, step or cycle, global example index); all side effects
(host I/O, checkpoints, printing) live here, the steps stay pure.
"""
from __future__ import annotations

import math
import platform
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from boostmis_jax import parallel, reporting
from boostmis_jax.checkpointing import Checkpointer
from boostmis_jax.data import load_dataset
from boostmis_jax.data.split import ensure_split
from boostmis_jax.errors import UserError
from boostmis_jax.evaluate import classification_metrics
from boostmis_jax.models import build_model
from boostmis_jax.oracle import ORACLES, Query, make_oracle
from boostmis_jax.sampling import rows_for_step
from boostmis_jax.state import cycle_end_step, init_state, make_optimizer
from boostmis_jax.steps import make_predict, make_preprocess, make_train_step
from boostmis_jax.thresholds import get_threshold


class Interrupted(Exception):
    """Raised after SIGTERM/SIGINT once the state is checkpointed."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"interrupted by signal {signum} at step {step}")
        self.signum, self.step = signum, step


# ======================================================================================================
# Config validation
# ======================================================================================================
def selector_names(cfg) -> tuple[str, ...]:
    return tuple(s.strip() for s in str(cfg.al.selectors).split("+") if s.strip())


def validate_config(cfg) -> None:
    """Catch nonsensical values up front, with the key and the fix in one line."""
    def need(ok, key, what):
        if not ok:
            raise UserError(f"config {key}={_get(cfg, key)!r}: {what}")

    need(int(cfg.train.steps) > 0, "train.steps", "must be > 0")
    need(int(cfg.train.batch_size) > 0, "train.batch_size", "must be > 0")
    need(int(cfg.ssl.uratio) >= 1 or cfg.ssl.threshold == "none", "ssl.uratio", "must be >= 1")
    need(0 < float(cfg.ssl.a) <= 1, "ssl.a", "must be in (0, 1]")
    need(float(cfg.ssl.T) > 0, "ssl.T", "must be > 0")
    need(0 <= float(cfg.ssl.tau_min) <= float(cfg.ssl.tau_max) <= 1, "ssl.tau_min",
         "need 0 <= ssl.tau_min <= ssl.tau_max <= 1")
    need(0 <= float(cfg.train.ema_decay) < 1, "train.ema_decay", "must be in [0, 1)")
    need(int(cfg.al.cycles) >= 0, "al.cycles", "must be >= 0")
    need(int(cfg.al.steps_per_cycle) >= 0, "al.steps_per_cycle", "must be >= 0")
    need(int(cfg.checkpoint.every_steps) > 0, "checkpoint.every_steps", "must be > 0")
    need(int(cfg.train.log_every) > 0, "train.log_every", "must be > 0")
    need(int(cfg.train.eval_every) > 0, "train.eval_every", "must be > 0")
    need(int(cfg.train.eval_batch_size) > 0, "train.eval_batch_size", "must be > 0")
    get_threshold(cfg.ssl.threshold)
    if int(cfg.al.cycles) > 0:
        from boostmis_jax.acquisition import SCORERS
        need(int(cfg.al.budget) > 0, "al.budget", "must be > 0 when al.cycles > 0")
        sel = selector_names(cfg)
        bad = [s for s in sel if s not in SCORERS]
        need(sel and not bad, "al.selectors", f"unknown selector(s) {bad}; use '+'-joined names from "
             f"{sorted(SCORERS)}")
        need(cfg.al.oracle in ORACLES, "al.oracle", f"choose one of {sorted(ORACLES)}")
        from boostmis_jax.acquisition import read_config
        read_config(cfg.al)  # chunk, knn_k, vat_* checked now, not after a whole training stage


def _get(cfg, dotted):
    for k in dotted.split("."):
        cfg = cfg[k]
    return cfg


# ======================================================================================================
# Evaluation (pad + mask, replicated outputs so every process sees all rows)
# ======================================================================================================
def evaluate_split(predict_probs, variables, x: np.ndarray, y: np.ndarray, num_classes: int, batch: int,
                   mesh) -> dict:
    probs = []
    for s in range(0, len(x), batch):
        xb, mask = parallel.pad_rows(x[s:s + batch], batch)
        p = predict_probs(variables, parallel.put_global(xb, mesh))
        probs.append(np.asarray(jax.device_get(p))[mask])
    return classification_metrics(np.concatenate(probs), y, num_classes)


def scalars(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}


def versions() -> dict:
    import flax
    import optax
    import orbax.checkpoint as ocp
    return {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jax.lib.__version__,
            "flax": flax.__version__, "optax": optax.__version__, "orbax": ocp.__version__,
            "numpy": np.__version__}


# ======================================================================================================
# The run
# ======================================================================================================
def run(cfg, workdir: str) -> dict:
    t_start = time.time()
    validate_config(cfg)
    parallel.init_distributed(cfg.parallel)
    main_proc = parallel.is_main_process()
    say = print if main_proc else (lambda *a, **k: None)
    workdir = Path(workdir)

    # ---------------------------------------------------------------- data
    ds = load_dataset(cfg.data)
    C = ds.num_classes
    n_train = len(ds.train_y)
    workdir.mkdir(parents=True, exist_ok=True)  # only once the data is known to be good
    mesh = parallel.make_mesh()
    n_dev = mesh.devices.size
    B = int(cfg.train.batch_size)
    uB = int(cfg.ssl.uratio) * B
    parallel.check_divisible("train.batch_size", B, mesh)
    eval_bs = -(-int(cfg.train.eval_batch_size) // n_dev) * n_dev
    say(f"boostmis_jax: {ds.name} ({ds.kind}, {n_train} train / {len(ds.val_y)} val / {len(ds.test_y)} test, "
        f"{C} classes) on {n_dev} {jax.default_backend()} device(s), {jax.process_count()} process(es)")

    # ---------------------------------------------------------------- model, state, steps
    model = build_model(cfg.model, C)
    tx = make_optimizer(cfg)
    sample = jnp.zeros((1,) + ds.train_x.shape[1:], jnp.float32)
    rep = parallel.replicated(mesh)
    state = jax.jit(lambda: init_state(model, tx, sample, n_train, C, cfg), out_shardings=rep)()
    thr = get_threshold(cfg.ssl.threshold)
    use_u = thr.uses_unlabeled and float(cfg.ssl.lambda_u) > 0

    compiles = {"train_step": 0, "predict": 0}
    scorer = PoolScorer(model, ds)

    def counted(name, fn):
        def wrapper(*a):
            compiles[name] += 1  # runs only while tracing
            return fn(*a)
        return wrapper

    ckpt = Checkpointer(workdir, keep=int(cfg.checkpoint.keep))

    # ---------------------------------------------------------------- restore
    restored = ckpt.restore(state)
    if restored is not None:
        step0, state, meta = restored
        say(f"resuming from step {step0} (cycle {meta['cycle']}, phase {meta['phase']}) in {workdir}")
    else:
        labeled = _shared_split(workdir, cfg, ds, main_proc)
        meta = {"cycle": 0, "phase": "train", "labeled": [int(i) for i in labeled], "oracle_labels": {},
                "picks": {}, "history": [], "best_val": None, "wall_time_s": 0.0}
        step0 = 0
    labels_eff = ds.train_y.astype(np.int32).copy()
    for k, v in meta["oracle_labels"].items():
        labels_eff[int(k)] = int(v)

    train_step = jax.jit(counted("train_step", make_train_step(
        model, tx, cfg, kind=ds.kind, num_classes=C, mean=ds.mean, std=ds.std)),
        out_shardings=(rep, rep), donate_argnums=0)
    predict = make_predict(model, ds.kind, ds.mean, ds.std)
    predict_probs = jax.jit(counted("predict", lambda v, x: jax.nn.softmax(predict(v, x)[0], -1)),
                            out_shardings=rep)
    snapshot_best = jax.jit(lambda s: {**s, "best": {"params": s["ema_params"],
                                                      "batch_stats": s["ema_batch_stats"]}},
                            out_shardings=rep, donate_argnums=0)
    ema_vars = lambda s: {"params": s["ema_params"], "batch_stats": s["ema_batch_stats"]}

    writer = reporting.MetricsWriter(workdir / "metrics.jsonl", resume_step=step0 if restored else None)
    stop = {"sig": None}

    def on_signal(signum, frame):
        stop["sig"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    wall0 = float(meta.get("wall_time_s", 0.0))

    def save(step, state):
        meta["wall_time_s"] = wall0 + time.time() - t_start
        ckpt.save(step, state, meta)

    try:
        step = step0
        while meta["phase"] != "done":
            cycle = int(meta["cycle"])
            labeled = np.asarray(meta["labeled"], np.int64)
            state = set_cycle_inputs(state, labeled, labels_eff, len(meta["oracle_labels"]), C, rep)
            # -------------------------------------------------------- train one cycle
            if meta["phase"] == "train":
                end = cycle_end_step(cfg, cycle)
                start = cycle_end_step(cfg, cycle - 1) if cycle > 0 else 0
                unlabeled = np.setdiff1d(np.arange(n_train), labeled)

                def make_batch(s, labeled=labeled, unlabeled=unlabeled, start=start, cycle=cycle,
                               seed=int(cfg.seed)):
                    il = rows_for_step(labeled, B, s - start, seed=seed, cycle=cycle, stream=0)
                    b = {"xl": ds.train_x[il], "yl": labels_eff[il]}
                    if use_u:
                        iu = rows_for_step(unlabeled, uB, s - start, seed=seed, cycle=cycle, stream=1)
                        b.update(xu=ds.train_x[iu], iu=iu.astype(np.int32), yu=ds.train_y[iu].astype(np.int32))
                    return b

                say(f"cycle {cycle}: {len(labeled)} labeled, {len(unlabeled)} unlabeled, steps {step}->{end}")
                bar = reporting.Progress(total=end, initial=step, desc=f"cycle {cycle}")
                pending = None
                for s, batch in parallel.prefetch(make_batch, range(step, end), mesh):
                    state, m = train_step(state, batch)
                    if pending is not None:  # metrics one step late: never block on the current step
                        _log_train(writer, bar, *pending)
                        pending = None
                    step = s + 1
                    bar.update(1)
                    if step % int(cfg.train.log_every) == 0 or step == end:
                        pending = (step, m, cycle, len(labeled))
                    if step % int(cfg.train.eval_every) == 0 or step == end:
                        if pending is not None:
                            _log_train(writer, bar, *pending)
                            pending = None
                        val = evaluate_split(predict_probs, ema_vars(state), ds.val_x, ds.val_y, C, eval_bs, mesh)
                        improved = meta["best_val"] is None or val["macro_f1"] > meta["best_val"]
                        if improved:
                            meta["best_val"] = val["macro_f1"]
                            state = snapshot_best(state)
                        writer.write(step, {**scalars("eval", val), "cycle": cycle, "labeled": len(labeled)})
                        bar.update(0, val_f1=f"{val['macro_f1']:.3f}")
                    if step % int(cfg.checkpoint.every_steps) == 0 and step != end:
                        if pending is not None:  # a logged row must never be older than the checkpoint
                            _log_train(writer, bar, *pending)
                            pending = None
                        save(step, state)
                    if step != end and _should_stop(stop, step, int(cfg.train.log_every)):
                        if pending is not None:
                            _log_train(writer, bar, *pending)
                        save(step, state)
                        ckpt.wait()
                        raise Interrupted(stop["sig"] or signal.SIGTERM, step)
                bar.close()
                # ---------------------------------------------------- end of cycle: test with best-by-val
                best_vars = state["best"] if meta["best_val"] is not None else ema_vars(state)
                test = evaluate_split(predict_probs, best_vars, ds.test_x, ds.test_y, C, eval_bs, mesh)
                val = evaluate_split(predict_probs, best_vars, ds.val_x, ds.val_y, C, eval_bs, mesh)
                row = {"cycle": cycle, "labeled": len(labeled), "step": step, "n_active": len(meta["oracle_labels"]),
                       "test": test, "val": val,
                       "compiles": {**compiles, "scorer": scorer.compiles}}
                meta["history"].append(row)
                writer.write(step, {**scalars("test", test), **scalars("val", val), "cycle": cycle,
                                    "labeled": len(labeled), "compiles/train_step": compiles["train_step"],
                                    "compiles/scorer": scorer.compiles})
                say(f"cycle {cycle} done at step {step}: test macro-F1 {test['macro_f1']:.4f}, "
                    f"accuracy {test['accuracy']:.4f}, AUC {test['auc']:.4f} ({len(labeled)} labels)")
                if main_proc and int(cfg.al.cycles) > 0:
                    reporting.plot_learning_curve(workdir / "learning_curve.png", [
                        {"labeled": h["labeled"], "test/macro_f1": h["test"]["macro_f1"]} for h in meta["history"]])
                meta["phase"] = "acquire" if cycle < int(cfg.al.cycles) else "done"
                save(step, state)
                if meta["phase"] != "done" and _should_stop(stop, step, 1):
                    ckpt.wait()
                    raise Interrupted(stop["sig"] or signal.SIGTERM, step)
            # -------------------------------------------------------- acquire + oracle
            if meta["phase"] == "acquire":
                answered = _acquire(cfg, ds, state, meta, scorer, mesh, labels_eff, say, workdir)
                if not answered:
                    ckpt.wait()
                    writer.close()
                    return {"status": "waiting_for_labels", "cycle": cycle}
                # No save here: the next periodic save records the new labeled set; a run killed before it
                # resumes from the 'acquire' checkpoint and recomputes the same picks deterministically.
        # ------------------------------------------------------------ summary
        ckpt.wait()
        last = meta["history"][-1]
        summary = {"test": last["test"], "val": last["val"], "labeled": last["labeled"],
                   "n_active": len(meta["oracle_labels"]), "steps": step, "cycles": meta["history"],
                   "devices": n_dev, "processes": jax.process_count(), "backend": jax.default_backend(),
                   "compiles": {**compiles, "scorer": scorer.compiles}, "config": cfg.to_dict(), "versions": versions(),
                   "wall_time_s": wall0 + time.time() - t_start}
        if main_proc:
            reporting.write_json_atomic(workdir / "summary.json", reporting.to_jsonable(summary))
            _print_report(summary, ds, workdir)
        return summary
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        writer.close()
        ckpt.close()


# ======================================================================================================
# Helpers of the loop
# ======================================================================================================
@jax.jit
def _apply_cycle_inputs(state, is_labeled, n_active, p_target):
    ssl = {**state["ssl"], "p_target": p_target}
    thr = ssl["thr"]
    if "memory" in thr:  # labeled rows leave the pool: C_t counts unlabeled samples only
        ssl["thr"] = {**thr, "memory": jnp.where(is_labeled, -1, thr["memory"])}
    return {**state, "n_active": n_active, "ssl": ssl}


def set_cycle_inputs(state, labeled: np.ndarray, labels_eff: np.ndarray, n_active: int, num_classes: int, rep):
    """What a cycle's labeled set feeds the step: N_A, the labeled class marginal (distribution alignment),
    and the threshold memory with labeled rows removed. All state, so checkpoints and resumes carry it;
    fixed shapes, so nothing recompiles."""
    is_labeled = np.zeros(labels_eff.shape, bool)
    is_labeled[labeled] = True
    p_target = np.bincount(labels_eff[labeled], minlength=num_classes).astype(np.float32) / len(labeled)
    args = jax.device_put((is_labeled, np.int32(n_active), p_target), rep)
    return _apply_cycle_inputs(state, *args)


def _should_stop(stop: dict, step: int, every: int) -> bool:
    """A signal is acted on by all processes at the same step: one process alone saving (orbax needs all
    of them) while the others enter the next step's collectives would deadlock a multi-host run."""
    if jax.process_count() == 1:
        return stop["sig"] is not None
    if step % every:
        return False
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.int32(stop["sig"] is not None))
    return bool(np.max(flags))


def _log_train(writer, bar, step, m, cycle, n_labeled):
    vals = {f"train/{k}": float(v) for k, v in jax.device_get(m).items()}
    if any(math.isnan(v) for v in vals.values()):
        raise UserError(f"training diverged at step {step} (NaN loss); lower --config.train.lr or check the "
                        f"input data for extreme values")
    writer.write(step, {**vals, "cycle": cycle, "labeled": n_labeled})
    post = {"loss": f"{vals['train/loss']:.3f}"}
    if "train/mask_rate" in vals:
        post.update(mask=f"{vals['train/mask_rate']:.2f}", tau=f"{vals['train/threshold']:.3f}")
    bar.update(0, **post)


def _on_process0(fn):
    """Run `fn` on process 0 only and tell every process whether it raised a UserError, so a bad input that
    only process 0 reads (split file, filled-in query CSV) stops all processes with the same one line
    instead of leaving the others waiting in the next collective."""
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils
    out, err = None, None
    if parallel.is_main_process():
        try:
            out = fn()
        except UserError as e:
            err = e
    failed = np.asarray(multihost_utils.broadcast_one_to_all(np.int32(err is not None)))
    if int(failed):
        raise err if err is not None else UserError("process 0 stopped on bad input (its log has the line); "
                                                    "fix it and re-run all processes")
    return out


def _shared_split(workdir: Path, cfg, ds, main_proc: bool) -> np.ndarray:
    """Process 0 makes/loads and saves the split; every other process receives it by broadcast."""
    labeled = _on_process0(lambda: ensure_split(workdir, cfg.data, ds, int(cfg.seed)))
    if jax.process_count() == 1:
        return labeled
    from jax.experimental import multihost_utils
    mask = np.zeros((len(ds.train_y),), np.int32)
    if labeled is not None:
        mask[labeled] = 1
    mask = np.asarray(multihost_utils.broadcast_one_to_all(mask))
    return np.flatnonzero(mask)


def _acquire(cfg, ds, state, meta, scorer: PoolScorer, mesh, labels_eff, say, workdir) -> bool:
    """Score the pool, ask the oracle, grow the labeled set. False = waiting for a person's labels."""
    from boostmis_jax import acquisition

    cycle = int(meta["cycle"])
    n_train = len(ds.train_y)
    labeled = np.zeros((n_train,), bool)
    labeled[np.asarray(meta["labeled"])] = True
    chunk = int(cfg.al.chunk)
    x_pool, valid = parallel.pad_rows(ds.train_x, chunk * mesh.devices.size)
    lab_pad = np.zeros(valid.shape, bool)
    lab_pad[:n_train] = labeled
    xs = scorer.preprocess(parallel.put_global(x_pool, mesh))
    variables = state["best"] if meta["best_val"] is not None else {
        "params": state["ema_params"], "batch_stats": state["ema_batch_stats"]}
    t0 = time.time()
    traces = scorer.traces
    picks = acquisition.acquire(
        scorer.apply_fn, variables, xs, parallel.put_global(valid & ~lab_pad, mesh),
        parallel.put_global(lab_pad, mesh), jax.random.fold_in(jax.random.key(int(cfg.seed)), 10_000 + cycle),
        selectors=selector_names(cfg), budget=int(cfg.al.budget), num_classes=ds.num_classes, cfg=cfg.al)
    scorer.compiles += int(scorer.traces > traces)
    say(f"cycle {cycle}: scored {n_train} pool samples in {time.time() - t0:.1f}s, {len(picks)} picks "
        f"({', '.join(sorted({p['selector'] for p in picks}))})")
    queries = [Query(index=int(p["index"]), id=ds.train_ids[int(p["index"])], selector=p["selector"],
                     score=float(p["score"]), predicted=int(p["predicted"])) for p in picks]
    oracle = make_oracle(cfg.al.oracle, train_y=ds.train_y, num_classes=ds.num_classes,
                         class_names=ds.class_names, images=ds.train_x if ds.kind == "image" else None)
    answers = _on_process0(lambda: oracle.answer(cycle, queries, workdir))
    if jax.process_count() > 1:
        answers = _broadcast_answers(answers, queries)
    if answers is None:
        return False
    for q in queries:
        labels_eff[q.index] = answers[q.index]
        meta["oracle_labels"][str(q.index)] = int(answers[q.index])
    meta["picks"][str(cycle)] = [{**p, "index": int(p["index"]), "label": int(answers[int(p["index"])])}
                                 for p in picks]
    meta["labeled"] = sorted(set(meta["labeled"]) | {q.index for q in queries})
    meta["cycle"] = cycle + 1
    meta["phase"] = "train"
    meta["best_val"] = None
    return True


class PoolScorer:
    """Per-run pool-scoring pieces with stable identities: the jitted scorer is cached on `apply_fn`, so one
    object for the whole run means one compile, and `compiles` counts how many acquisitions traced it.
    (Kept per run, not in a module-level cache keyed by id(model): ids are reused after garbage collection.)"""

    def __init__(self, model, ds):
        predict = make_predict(model, ds.kind, ds.mean, ds.std, preprocessed=True)
        self.preprocess = jax.jit(make_preprocess(ds.kind, ds.mean, ds.std))
        self.traces = 0
        self.compiles = 0

        def apply_fn(variables, x):
            self.traces += 1  # runs only while the scorer is being traced
            return predict(variables, x)

        self.apply_fn = apply_fn


def _broadcast_answers(answers, queries):
    from jax.experimental import multihost_utils
    arr = np.zeros((len(queries) + 1,), np.int32)  # [answered?, label of each query]
    if answers is not None:
        arr[0] = 1
        arr[1:] = [answers[q.index] for q in queries]
    arr = np.asarray(multihost_utils.broadcast_one_to_all(arr))
    if not arr[0]:
        return None
    return {q.index: int(a) for q, a in zip(queries, arr[1:], strict=True)}


def _print_report(summary, ds, workdir) -> None:
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
