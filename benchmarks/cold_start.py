"""Cold start: what a new user waits for, from a fresh process with an EMPTY compilation cache.

Per config (demo, pneumonia) one JSON line from a fresh worker process that runs the real CLI
(`boostmis_jax.main`, 1 training step, 1 acquisition round) with timing hooks wrapped around the loop's own
functions (nothing in the package is changed): seconds from process start to

  * `imports_s`            jax + boostmis_jax.train imported;
  * `first_step_s`         the first training step finished (block_until_ready), compile included;
  * `first_score_s`        the first pool scoring finished (aus+bus over the whole train pool);
  * `total_s`              the whole run (1 step, eval, checkpoint, acquisition, 1 more step, summary);

plus `compile_s` (XLA compile seconds per jitted function, from jax.monitoring, tracing/lowering included),
`phases_s` (the loop's steps: setup, restore_or_start, train_cycle, finish_cycle, acquire, summarize).

With --cli one more line per config: the plain CLI, timed from outside (`python -m boostmis_jax.main`, no
hooks), which is what the goal (< 15 s for the demo) is about.

    python benchmarks/cold_start.py                  # demo + pneumonia, hooked workers + plain CLI
    python benchmarks/cold_start.py --configs demo --repeats 2
    python benchmarks/cold_start.py --warm           # the same with a cache filled by a first run
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"demo": "configs/demo.py", "pneumonia": "configs/pneumonia.py"}
# One step, one acquisition round, nothing periodic in between: the shortest run that touches every piece.
OVERRIDES = ["--config.train.steps=1", "--config.al.cycles=1", "--config.al.steps_per_cycle=1",
             "--config.train.eval_every=1", "--config.train.log_every=1", "--config.checkpoint.every_steps=1"]


def loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------------------- the worker
def worker(config: str, workdir: str, t0: float) -> dict:
    """Runs in the fresh process: hooks around the loop, then the CLI's own entry point."""
    marks: dict[str, float] = {"python_started_s": time.time() - t0}
    from boostmis_jax import xla_env

    xla_env.configure()
    import jax
    from jax import monitoring

    compile_s: dict[str, float] = defaultdict(float)
    events: dict[str, float] = defaultdict(float)

    def on_duration(event: str, duration: float, **kw) -> None:
        events[event] += duration
        if event.endswith(("backend_compile_duration", "jaxpr_trace_duration", "jaxpr_to_mlir_module_duration")):
            compile_s[str(kw.get("fun_name", "?"))] += duration

    spans: list[tuple[float, float, str, str]] = []

    def on_span(event: str, start: float, end: float, **kw) -> None:
        if end - start > 0.2:
            spans.append((start - t0, end - start, event.rsplit("/", 1)[-1], str(kw.get("fun_name", "?"))))

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_time_span_listener(on_span)
    from boostmis_jax import acquisition, main, train

    marks["imports_s"] = time.time() - t0
    phases: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.time()
            try:
                return fn(*a, **k)
            finally:
                phases[name] += time.time() - t
        return wrapper

    for name in ("setup", "restore_or_start", "train_cycle", "finish_cycle", "acquire", "summarize"):
        setattr(train, name, timed(name, getattr(train, name)))
    setup = train.setup

    def hooked_setup(*a, **k):
        r, init_fn = setup(*a, **k)
        step = r.train_step

        def first_step(*sa):
            out = step(*sa)
            if "first_step_s" not in marks:
                jax.block_until_ready(out)
                marks["first_step_s"] = time.time() - t0
            return out
        r.train_step = first_step
        return r, init_fn

    train.setup = hooked_setup
    acquire = acquisition.acquire_round  # what train.acquire calls

    def first_acquire(*a, **k):
        out = acquire(*a, **k)  # returns host-side queries: the scoring has finished
        marks.setdefault("first_score_s", time.time() - t0)
        return out

    acquisition.acquire_round = first_acquire
    sys.argv = ["boostmis_jax.main", "--config", str(ROOT / CONFIGS[config]), "--workdir", workdir, *OVERRIDES]
    rc = 0
    try:
        main.entry()
    except SystemExit as e:
        rc = int(e.code or 0)
    marks["total_s"] = time.time() - t0
    return {"config": config, "rc": rc, **{k: round(v, 2) for k, v in marks.items()},
            "compile_s": {k: round(v, 2) for k, v in sorted(compile_s.items(), key=lambda kv: -kv[1]) if v > 0.05},
            "compile_total_s": round(sum(compile_s.values()), 2),
            "phases_s": {k: round(v, 2) for k, v in phases.items()},
            "cache_hits": int(events.get("/jax/compilation_cache/cache_hits", 0)),
            # (start since process start, seconds, what, function) of every compile stage over 0.2 s
            "timeline": [[round(a, 2), round(b, 2), c, d] for a, b, c, d in sorted(spans)]}


# ------------------------------------------------------------------------------------------- the parent
def run_one(config: str, cache: str, hooked: bool) -> dict:
    wd = tempfile.mkdtemp(prefix="boostmis_cold_")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    load0 = loadavg()
    t0 = time.time()
    if hooked:
        cmd = [sys.executable, __file__, "--worker", config, "--workdir", wd, "--t0", repr(t0)]
    else:
        cmd = [sys.executable, "-m", "boostmis_jax.main", "--config", CONFIGS[config], "--workdir", wd, *OVERRIDES]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.time() - t0
    shutil.rmtree(wd, ignore_errors=True)
    if hooked:
        lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith('{"config"')]
        row = lines[-1] if lines else {"config": config, "rc": out.returncode}
    else:
        row = {"config": config, "mode": "plain_cli", "rc": out.returncode, "total_s": round(wall, 2)}
    if out.returncode:
        row["stderr_tail"] = out.stderr[-600:]
    row.update(loadavg=[load0, loadavg()], wall_s=round(wall, 2))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="demo,pneumonia", help=f"comma list from {sorted(CONFIGS)}")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--no-cli", action="store_true", help="skip the plain-CLI line")
    p.add_argument("--warm", action="store_true", help="reuse one cache: a first untimed run fills it")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        sys.path.insert(0, str(ROOT))
        row = worker(a.worker, a.workdir, a.t0)
        sys.stdout.flush()
        print(json.dumps(row), flush=True)
        return
    from importlib.metadata import version

    for config in [c.strip() for c in a.configs.split(",") if c.strip()]:
        if config not in CONFIGS:
            raise SystemExit(f"error: unknown config {config!r}; choose from {sorted(CONFIGS)}")
        for _ in range(a.repeats):
            for hooked in (True, False) if not a.no_cli else (True,):
                cache = tempfile.mkdtemp(prefix="boostmis_xla_cache_")
                if a.warm:
                    run_one(config, cache, hooked=False)
                row = run_one(config, cache, hooked)
                shutil.rmtree(cache, ignore_errors=True)
                row.update(cache="warm" if a.warm else "empty", xla_flags=os.environ.get("XLA_FLAGS", ""),
                           jax=version("jax"))
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
