"""The study command: plan the grid, run it (here or in workers), write the tables; the CLI around it."""
from __future__ import annotations

import copy
import datetime
import importlib.util
import inspect
import json
import os
import platform
import sys
from pathlib import Path

import ml_collections
import numpy as np

from boostmis_jax.errors import UserError
from boostmis_jax.study import cases, execute, outputs, report
from boostmis_jax.study.methods import PRESETS, parse_methods, parse_seeds
from boostmis_jax.study.plan import budget_plan, make_plan, run_base

PROTOCOL = "protocol.json"


def machine() -> str:
    import jax

    devs = jax.devices()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{platform.system()} {platform.machine()}, {cores} CPU cores, {len(devs)} "
            f"{jax.default_backend()} device(s) ({devs[0].device_kind}), jax {jax.__version__}")


def code_version() -> str:
    """The git commit the package was imported from, '+ local changes' when its code or configs differ from
    it: a study's numbers are only reproducible with the code that made them."""
    import subprocess

    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout

    try:
        top, head = git("rev-parse", "--show-toplevel", "HEAD").splitlines()
        if Path(top).resolve() != root:     # an installed copy inside some other repository
            return "unknown (not a git checkout)"
        dirty = git("status", "--porcelain", "--", "boostmis_jax", "configs").strip()
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown (not a git checkout)"
    return f"git {head}" + (" + local changes in boostmis_jax/ or configs/" if dirty else "")


def fix_protocol(workdir: Path, primary: str) -> None:
    """The primary endpoint is fixed when a study workdir is first used; a rerun with another is refused."""
    from boostmis_jax.fsutil import atomic_write_text

    path = workdir / PROTOCOL
    if path.exists():
        try:
            old = json.loads(path.read_text()).get("primary")
        except (OSError, ValueError, AttributeError):
            old = None
        if old is not None and old != primary:
            raise UserError(f"study.primary={primary!r} but {workdir} was started with primary {old!r}; the "
                            f"primary endpoint is fixed before a study runs: pass "
                            f"--config.study.primary={old} or use a new --workdir")
        if old is not None:
            return
    workdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"primary": primary}) + "\n")


def shown_runs(workdir: Path) -> set[tuple[str, int]]:
    """(method, seed) of the rows the existing study.json shows (empty when there is none or it is torn)."""
    try:
        doc = json.loads((workdir / "study.json").read_text())
        return {(r["method"], int(r["seed"])) for r in doc.get("runs", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return set()


def run_study(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike, *, command: str = "",
              config_name: str = "", dry_run: bool = False, say=print) -> dict:
    """Plan the grid, run (or skip) every run through train.run, write the study outputs; returns study.json's
    content as a dict (the plan only, with dry_run)."""
    from boostmis_jax import defaults, parallel
    from boostmis_jax.data import load_dataset

    workdir = Path(workdir)
    if str(cfg.study.preset) not in PRESETS:
        raise UserError(f"study.preset={cfg.study.preset!r}: choose one of {list(PRESETS)}")
    primary = report.check_primary(str(cfg.study.get("primary", "aubc/balanced_accuracy")))
    cfg = copy.deepcopy(cfg)
    seeds = parse_seeds(cfg.study.seeds)
    data_paths = cases.prepare_data(cfg, workdir, seeds)
    base = run_base(cfg)
    defaults.validate(base)
    parallel.init_distributed(**base.parallel)  # as train.run does; before any device is touched
    ds = load_dataset(base.data)
    plan = make_plan(cfg, workdir, len(ds.train_y), data_paths)
    for p in plan:  # every arm's config, up front: a bad value fails before the first run, not hours in
        try:
            defaults.validate(p.cfg)
        except UserError as e:
            raise UserError(f"study method {p.method}: {e}") from None
    methods = parse_methods(cfg.study.methods)
    b = budget_plan(base)
    backend, free_gib = execute.device_info()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    todo = sum(execute.finished(p) is None for p in plan)
    workers = execute.worker_count(cfg.study.get("workers", "auto"), max(1, todo), backend, free_gib, cores)
    meta = {"config": config_name, "preset": str(cfg.study.preset), "command": command, "primary": primary,
            "methods": methods, "seeds": seeds, "reference": str(cfg.study.reference),
            "machine": machine(), "code": code_version(),
            "workers": f"{workers} concurrent run(s) ({backend}"
                       + (f", {free_gib:.0f} GiB free at start" if free_gib else "") + ")",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "data": f"{ds.name} ({ds.kind}): train {len(ds.train_y)} / val {len(ds.val_y)} / test "
                    f"{len(ds.test_y)}, {ds.num_classes} classes, train per class "
                    f"{np.bincount(ds.train_y, minlength=ds.num_classes).tolist()}"
                    + (f" (cut of seed {seeds[0]}; one cut per seed)" if data_paths else "")
                    + (f"; test carved from train ({float(base.data.test_from_train):g}), the source's test "
                       f"({len(ds.official_test_y)} rows) reported as official/*"
                       if ds.official_test_y is not None else "")
                    + f"; initial labels: {base.data.label_balance}",
            "budget": f"{b['initial']} initial labels + {b['cycles']} cycles x {b['round']} = {b['labels']} "
                      f"labels (every train row for full_supervised), {b['first_steps']} + {b['cycles']} x "
                      f"{b['cycle_steps']} = {b['steps']} steps in every arm",
            "planned_runs": len(plan)}
    main = parallel.is_main_process()
    say(f"[study] {len(plan)} runs ({len(methods)} methods x {len(seeds)} seeds) in {workdir}; "
        f"{meta['budget']}; primary {primary}; {meta['workers']}")
    if dry_run:
        for p in plan:
            how = (f"{p.cfg.al.selectors} ({p.cfg.al.candidates}) K={p.cfg.al.budget} x "
                   f"{p.cfg.al.cycles} cycles"
                   if int(p.cfg.al.cycles) else "every label up front")
            say(f"  {p.name}: threshold={p.cfg.ssl.threshold}, {how}, {p.labels} labels, {p.steps} steps "
                f"-> {p.workdir}")
        return {"study": meta, "plan": [{"method": p.method, "seed": p.seed, "workdir": str(p.workdir),
                                         "labels": p.labels, "steps": p.steps} for p in plan]}
    if main:
        fix_protocol(workdir, primary)

    class_names = list(ds.class_names)
    del ds  # the runs load their own copy
    planned_keys = {(p.method, p.seed) for p in plan}

    def on_result(runs: list[dict]) -> None:
        if not main:
            return
        have = {(r["method"], r["seed"]) for r in runs}
        lost = (shown_runs(workdir) & planned_keys) - have
        if lost:
            say(f"[study] kept the earlier study.json: it shows {len(lost)} run(s) not finished under this "
                f"plan yet ({', '.join(f'{m} seed {s}' for m, s in sorted(lost)[:4])})")
            return
        outputs.write_outputs(workdir, meta, runs, class_names)

    runs = execute.execute(plan, on_result, say=say, workers=workers, workdir=workdir)
    if main:
        outputs.write_outputs(workdir, meta, runs, class_names)   # complete: every planned run finished
        say(f"[study] wrote {workdir}/study.json, study.md, learning_curves.png, confusion_matrices.png")
        say((workdir / "study.md").read_text())
    return {"study": meta, "runs": runs}


def resolve_preset(cfg: ml_collections.ConfigDict | None, filename: str, overrides: dict
                   ) -> ml_collections.ConfigDict | None:
    """--config.study.preset=P rebuilds the config file's get_config(P), then re-applies every override (the
    preset sets many keys at once; the user's own overrides still win)."""
    preset = overrides.get("study.preset")
    if preset is None:
        return cfg
    if preset not in PRESETS:
        raise UserError(f"study.preset={preset!r}: choose one of {list(PRESETS)}")
    path = filename.split(":", 1)[0]
    spec = importlib.util.spec_from_file_location("_study_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not inspect.signature(module.get_config).parameters:
        raise UserError(f"{path}: get_config() takes no preset argument, so study.preset cannot rebuild it; "
                        f"define get_config(preset='cpu')")
    new = module.get_config(preset)
    for key, value in overrides.items():
        node = new
        *parents, leaf = key.split(".")
        for k in parents:
            node = node[k]
        node[leaf] = value
    return new
