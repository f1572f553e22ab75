"""Running the plan: skip what is finished, resume what is not, one run at a time in this process (CPU) or
several at once on one accelerator (worker subprocesses that claim runs from the plan), and write the tables
after every finished run from every record available.

Workers: `study.workers` = auto (1 on CPU; on a GPU min(runs left, CPU cores / 2, free device GiB /
GIB_PER_RUN, MAX_WORKERS)) or an integer. Each worker is `python -m boostmis_jax.study.execute --worker ...`:
it claims the next unclaimed run (an O_EXCL file per run), runs it through train.run, and moves on; a run that
fails writes its one-line error and the worker continues. Workers share one persistent compilation cache
(JAX_COMPILATION_CACHE_DIR), allocate on demand (XLA_PYTHON_CLIENT_PREALLOCATE=false) and are capped at an
equal share of device memory (XLA_PYTHON_CLIENT_MEM_FRACTION).

Tables never shrink: study.json/study.md are rewritten from every finished run of the plan (finished earlier
or now), and not at all while that would drop a (method, seed) row the existing study.json shows; a failed
run leaves the last good tables and the study ends with a one-line error naming it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import ml_collections

from boostmis_jax.errors import UserError
from boostmis_jax.study.plan import PlannedRun

GIB_PER_RUN = 6.0        # device memory a worker may need (WRN-28-2 in bf16 at batch 64 x (1 + 2 x 7))
MAX_WORKERS = 8


def finished(p: PlannedRun) -> dict | None:
    """The run's summary when it finished under the planned config (cadence keys aside), else None."""
    from boostmis_jax.bookkeeping import config_changes
    from boostmis_jax.defaults import get_config
    from boostmis_jax.reporting import to_jsonable

    path = p.workdir / "summary.json"
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # torn or foreign: train.run resumes from the checkpoint and rewrites it
    if not isinstance(summary, dict) or not isinstance(summary.get("test"), dict):
        return None
    planned = to_jsonable(p.cfg.to_dict())
    old = summary.get("config", {})
    if not isinstance(old, dict):
        return None
    if config_changes(old, planned, to_jsonable(get_config().to_dict())) or old.get("al", {}).get("cycles") != planned["al"]["cycles"]:
        return None  # train.run extends it (more al.cycles) or refuses the change in one line
    return summary


def hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Eta:
    """Seconds left, from the runs trained in this invocation: seconds per image a step trains on, kept apart
    for supervised steps (B labeled images) and SSL steps (B + 2 x uratio x B: the unlabeled weak and strong
    views), so that after a cheap supervised run the SSL runs ahead are not priced like it. A kind not seen
    yet is priced at the seen kind's rate per image. With W workers, divide by W."""

    def __init__(self) -> None:
        self.spent: dict[bool, list[float]] = {True: [0.0, 0.0], False: [0.0, 0.0]}

    @staticmethod
    def kind(p: PlannedRun) -> bool:
        return str(p.cfg.ssl.threshold) != "none"

    @classmethod
    def images(cls, p: PlannedRun) -> float:
        b = float(p.cfg.train.batch_size)
        per_step = b * (1 + 2 * float(p.cfg.ssl.uratio)) if cls.kind(p) else b
        return per_step * p.steps

    def record(self, p: PlannedRun, seconds: float) -> None:
        self.spent[self.kind(p)][0] += seconds
        self.spent[self.kind(p)][1] += self.images(p)

    def left(self, todo: list[PlannedRun]) -> float | None:
        rates = {k: s / n for k, (s, n) in self.spent.items() if n}
        if not rates:
            return None
        pooled = sum(s for s, _ in self.spent.values()) / sum(n for _, n in self.spent.values())
        return sum(self.images(p) * rates.get(self.kind(p), pooled) for p in todo)


def annotated_per_round(summary: dict) -> list[list[int]]:
    """True labels of the rows the selectors sent to annotation, counted per class, one list per round."""
    n = len(summary["test"].get("per_class_recall", []))
    rounds = []
    for _, picks in sorted((summary.get("picks") or {}).items(), key=lambda kv: int(kv[0])):
        counts = [0] * n
        for q in picks:
            label = q.get("label")
            if label is not None and 0 <= int(label) < n:
                counts[int(label)] += 1
        rounds.append(counts)
    return rounds


CURVE_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_f1_val_threshold", "auc", "minority_recall",
              "minority_auprc", "ece", "per_class_recall")


def run_record(p: PlannedRun, summary: dict) -> dict:
    """What study.json keeps of one run: final test/val metrics and the budget curve (per cycle: labels,
    test metrics, validation macro-F1, the labeled set's class counts)."""
    rounds = annotated_per_round(summary)
    n_classes = len(summary["test"].get("per_class_recall", []))
    curve = [{"cycle": h["cycle"], "labeled": h["labeled"], "step": h.get("step"),
              "test": {k: h["test"].get(k) for k in CURVE_KEYS if k in h["test"]},
              "official_balanced_accuracy": (h["test"].get("official") or {}).get("balanced_accuracy"),
              "val_macro_f1": h["val"]["macro_f1"], "labeled_per_class": h.get("labeled_per_class")}
             for h in summary.get("cycles", [])]
    return {"method": p.method, "seed": p.seed, "workdir": str(p.workdir), "labeled": summary["labeled"],
            "n_active": summary.get("n_active", 0),
            "annotated_per_class": [sum(r[c] for r in rounds) for c in range(n_classes)],
            "annotated_per_round": rounds, "steps": summary["steps"],
            "wall_time_s": summary.get("wall_time_s"), "test": summary["test"], "val": summary["val"],
            "curve": curve, "config": summary.get("config", {})}


# ------------------------------------------------------------------------------------------ the workers
def device_info() -> tuple[str, float | None]:
    """(jax backend, free accelerator memory in GiB or None)."""
    import jax

    backend = jax.default_backend()
    if backend == "cpu":
        return backend, None
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
            return backend, float(out.split()[0]) / 1024.0
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    try:
        st = jax.devices()[0].memory_stats() or {}
        return backend, (st.get("bytes_limit", 0) - st.get("bytes_in_use", 0)) / 2 ** 30 or None
    except Exception:  # noqa: BLE001  memory_stats is optional per backend
        return backend, None


def worker_count(setting, todo: int, backend: str, free_gib: float | None, cores: int) -> int:
    """study.workers resolved: an integer as given (at most the runs left), auto = 1 on CPU, else bounded by
    CPU cores / 2, free memory / GIB_PER_RUN and MAX_WORKERS."""
    text = str(setting).strip()
    if text != "auto":
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise UserError(f"study.workers={setting!r}: expected auto or an integer >= 1; "
                            f"set --config.study.workers=auto")
        return max(1, min(n, todo))
    if backend == "cpu":
        return 1
    by_mem = int((free_gib or GIB_PER_RUN) // GIB_PER_RUN)
    return max(1, min(todo, max(1, cores // 2), by_mem, MAX_WORKERS))


def _queue_entry(i: int, p: PlannedRun) -> dict:
    from boostmis_jax.reporting import to_jsonable

    return {"index": i, "method": p.method, "seed": p.seed, "workdir": str(p.workdir), "labels": p.labels,
            "steps": p.steps, "config": to_jsonable(p.cfg.to_dict())}


def worker_main(queue_path: str, claims: str, worker: int) -> int:
    """One worker: claim runs in plan order, run each, record failures; 0 when the queue is empty."""
    from boostmis_jax import train

    entries = json.loads(Path(queue_path).read_text())
    for e in entries:
        try:
            fd = os.open(os.path.join(claims, f"{e['index']}.claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(fd, str(worker).encode())
        os.close(fd)
        cfg = ml_collections.ConfigDict(e["config"])
        name = f"{e['method']} seed {e['seed']}"
        print(f"[worker {worker}] {name}: {e['labels']} labels, {e['steps']} steps -> {e['workdir']}",
              flush=True)
        try:
            summary = train.run(cfg, e["workdir"])
            if summary.get("status") == "waiting_for_labels":
                raise UserError(f"{name}: the run waits for labels; the study needs al.oracle=simulated")
        except train.Interrupted:
            return 128 + 15
        except Exception as ex:  # noqa: BLE001  one failed run must not stop the other runs
            msg = " ".join(str(ex).split())[:400] or type(ex).__name__
            Path(claims, f"{e['index']}.failed").write_text(f"{type(ex).__name__}: {msg}\n")
            print(f"[worker {worker}] {name} failed: {msg}", flush=True)
    return 0


def _spawn(workdir: Path, plan: list[PlannedRun], todo: list[int], n: int, say) -> tuple[list, str, Path]:
    state = workdir / ".study"
    claims = state / f"claims-{uuid.uuid4().hex[:8]}"
    claims.mkdir(parents=True)
    queue = state / "queue.json"
    from boostmis_jax.fsutil import atomic_write_text

    atomic_write_text(queue, json.dumps([_queue_entry(i, plan[i]) for i in todo]))
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / n:.3f}")
    env.setdefault("JAX_COMPILATION_CACHE_DIR",
                   os.path.join(os.path.expanduser("~"), ".cache", "boostmis_jax", "xla"))
    env["PYTHONUNBUFFERED"] = "1"
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    procs = []
    for k in range(n):
        log = open(logs / f"worker{k}.log", "a")
        cmd = [sys.executable, "-m", "boostmis_jax.study.execute", "--worker", str(queue), str(claims),
               str(k)]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    say(f"[study] {n} workers on {len(todo)} runs (logs: {logs}/worker<k>.log)")
    return procs, str(claims), logs


def execute(plan: list[PlannedRun], on_result: Callable[[list[dict]], None], say=print, *, workers: int = 1,
            workdir: Path | None = None) -> list[dict]:
    """Run (or skip) every planned run; `on_result(records)` with every finished record so far (plan order)
    after each newly finished run. Returns the records; raises one UserError at the end naming failed runs."""
    t0, eta = time.time(), Eta()
    summaries: list[dict | None] = [finished(p) for p in plan]
    failed: dict[int, str] = {}

    def records() -> list[dict]:
        return [run_record(p, s) for p, s in zip(plan, summaries, strict=True) if s is not None]

    for i, (p, s) in enumerate(zip(plan, summaries, strict=True), start=1):
        if s is not None:
            say(f"[study] run {i}/{len(plan)} {p.name}: finished earlier, skipped (test balanced acc. "
                f"{s['test'].get('balanced_accuracy', float('nan')):.4f})")
    todo = [i for i, s in enumerate(summaries) if s is None]
    if any(s is not None for s in summaries):
        on_result(records())
    if workers > 1 and len(todo) > 1:
        _execute_workers(plan, summaries, todo, failed, on_result, records, say, workers, workdir, eta, t0)
    else:
        _execute_here(plan, summaries, todo, failed, on_result, records, say, eta, t0)
    say(f"[study] {len(plan) - len(failed)} of {len(plan)} runs done in {hms(time.time() - t0)}")
    if failed:
        names = "; ".join(f"{plan[i].name} ({msg})" for i, msg in failed.items())
        raise UserError(f"study: {len(failed)} run(s) failed, tables keep every finished run: {names[:600]}; "
                        f"fix the cause (or delete that run's directory) and re-run the same command")
    return records()


def _execute_here(plan, summaries, todo, failed, on_result, records, say, eta, t0) -> None:
    from boostmis_jax import train

    for n_done, i in enumerate(todo):
        p = plan[i]
        left = eta.left([plan[j] for j in todo[n_done:]])
        head = f"[study] run {i + 1}/{len(plan)} {p.name}"
        say(f"{head}: {p.labels} labels, {p.steps} steps, {p.workdir} (elapsed {hms(time.time() - t0)}, "
            f"ETA {hms(left) if left is not None else 'after the first run'})")
        t_run = time.time()
        try:
            summary = train.run(p.cfg, str(p.workdir))
        except UserError as e:
            failed[i] = " ".join(str(e).split())[:300]
            say(f"{head} failed: {failed[i]}")
            continue
        if summary.get("status") == "waiting_for_labels":
            raise UserError(f"{p.name}: the run waits for labels; the study needs al.oracle=simulated")
        eta.record(p, time.time() - t_run)
        summaries[i] = summary
        say(f"{head} done in {hms(time.time() - t_run)}: test balanced acc. "
            f"{summary['test']['balanced_accuracy']:.4f} ({summary['labeled']} labels, "
            f"{summary['steps']} steps)")
        on_result(records())


def _execute_workers(plan, summaries, todo, failed, on_result, records, say, workers, workdir, eta,
                     t0) -> None:
    """Workers claim the runs; this process polls for finished summaries and failure notes, writes the tables
    after each, and on SIGINT/SIGTERM stops the workers (each checkpoints) and raises train.Interrupted."""
    import signal

    from boostmis_jax import train

    stop: dict = {"sig": None}
    old = {s: signal.signal(s, lambda signum, frame: stop.update(sig=signum)) for s in (signal.SIGINT,
                                                                                       signal.SIGTERM)}
    procs, claims, _ = _spawn(Path(workdir), plan, todo, workers, say)
    pending = list(todo)
    started: dict[int, float] = {}
    try:
        while pending:
            if stop["sig"] is not None:
                say(f"[study] signal {stop['sig']}: stopping the workers (each checkpoints its run)")
                raise train.Interrupted(stop["sig"], 0)
            alive = any(pr.poll() is None for pr, _ in procs)
            for i in list(pending):
                if os.path.exists(os.path.join(claims, f"{i}.claim")):
                    started.setdefault(i, time.time())
                if os.path.exists(os.path.join(claims, f"{i}.failed")):
                    failed[i] = Path(claims, f"{i}.failed").read_text().strip()[:300]
                    pending.remove(i)
                    say(f"[study] run {i + 1}/{len(plan)} {plan[i].name} failed: {failed[i]}")
                    continue
                s = finished(plan[i])
                if s is not None:
                    summaries[i] = s
                    pending.remove(i)
                    eta.record(plan[i], float(s.get("wall_time_s") or time.time() - started.get(i, t0)))
                    left = eta.left([plan[j] for j in pending])
                    say(f"[study] run {i + 1}/{len(plan)} {plan[i].name} done: test balanced acc. "
                        f"{s['test']['balanced_accuracy']:.4f}; {len(todo) - len(pending)}/{len(todo)} done, "
                        f"elapsed {hms(time.time() - t0)}, ETA "
                        f"{hms(left / workers) if left is not None else '?'}")
                    on_result(records())
            if not alive and pending:
                for i in pending:
                    failed.setdefault(i, "its worker exited before finishing it (see logs/worker<k>.log)")
                break
            time.sleep(0.5)
    finally:
        for pr, log in procs:
            if pr.poll() is None:
                pr.terminate()       # train.run checkpoints on SIGTERM; a rerun resumes
        for pr, log in procs:
            try:
                pr.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pr.kill()
            log.close()
        shutil.rmtree(claims, ignore_errors=True)
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        from boostmis_jax.xla_env import prepare_process

        prepare_process()
        sys.exit(worker_main(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    print("usage: python -m boostmis_jax.study.execute --worker QUEUE CLAIMS ID (started by the study)",
          file=sys.stderr)
    sys.exit(2)
