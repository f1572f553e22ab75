"""study.execute and study.cli with train.run replaced: skip/resume, failures that never shrink the tables
(a failed rerun keeps every row), the fixed primary endpoint, worker sizing."""
import json
from pathlib import Path

import ml_collections
import pytest

from boostmis_jax import study
from boostmis_jax.defaults import get_config
from boostmis_jax.errors import UserError
from boostmis_jax.study import cli, execute
from boostmis_jax.study.execute import Eta, PlannedRun


def study_config(methods=("fixmatch", "boostmis"), seeds=(0, 1)):
    cfg = get_config()
    cfg.data.update(source="mescc_features", path="", num_labels=10, label_balance="random")
    cfg.model.name = "mlp"
    cfg.train.steps = 30
    cfg.al.update({"cycles": 2, "steps_per_cycle": 10, "budget": 3})
    cfg.study = study.study_section(methods, seeds, "cpu", data="breast_cancer_mescc")
    return cfg


def fake_summary(cfg, value=0.5):
    metrics = {"accuracy": value, "balanced_accuracy": value, "macro_f1": value, "auc": value,
               "per_class_recall": [value, value], "confusion_matrix": [[1, 0], [0, 1]]}
    n0, per = int(cfg.data.num_labels), int(cfg.al.budget) * len(str(cfg.al.selectors).split("+"))
    cycles = [{"cycle": i, "labeled": n0 + i * per, "step": 30 + 10 * i, "test": metrics, "val": metrics,
               "labeled_per_class": [1, n0 + i * per - 1]} for i in range(int(cfg.al.cycles) + 1)]
    return {"test": metrics, "val": metrics, "labeled": cycles[-1]["labeled"], "n_active": 0,
            "steps": 50, "wall_time_s": 1.0, "config": cfg.to_dict(), "cycles": cycles}


@pytest.fixture
def fake_train(monkeypatch):
    """train.run stand-in: records its calls, writes summary.json as the real one does, fails on request."""
    from boostmis_jax import train
    from boostmis_jax.reporting import write_json_atomic

    calls, broken = [], set()

    def run(cfg, workdir):
        calls.append(workdir)
        if any(workdir.endswith(b) for b in broken):
            raise UserError(f"{workdir}: checkpoint unreadable")
        s = fake_summary(cfg, 0.5 + 0.01 * int(cfg.seed))
        write_json_atomic(f"{workdir}/summary.json", s)
        return s

    monkeypatch.setattr(train, "run", run)
    run.calls, run.broken = calls, broken
    return run


def test_finished_runs_are_skipped_and_unfinished_ones_go_back_to_train_run(tmp_path, fake_train):
    plan = study.make_plan(study_config(), tmp_path, 500)
    lines = []
    results = execute.execute(plan, lambda rs: None, say=lines.append)
    assert fake_train.calls == [str(p.workdir) for p in plan] and len(results) == 4
    assert any("run 1/4 fixmatch seed 0" in ln and "ETA" in ln for ln in lines)
    fake_train.calls.clear()
    again = execute.execute(plan, lambda rs: None, say=lines.append)
    assert fake_train.calls == [] and [r["test"] for r in again] == [r["test"] for r in results]
    (plan[3].workdir / "summary.json").unlink()             # interrupted: train.run resumes it
    (plan[0].workdir / "summary.json").write_text("null")   # torn or foreign: not finished, no traceback
    plan[1].cfg.train.log_every = 7                          # cadence only: still the same run
    plan[2].cfg.train.lr = 0.5                               # a different run: not skipped
    execute.execute(plan, lambda rs: None, say=lines.append)
    assert fake_train.calls == [str(plan[i].workdir) for i in (0, 2, 3)]


def test_a_run_finished_before_a_new_config_key_still_counts_as_finished(tmp_path, fake_train):
    plan = study.make_plan(study_config(), tmp_path, 500)
    execute.execute(plan, lambda rs: None, say=lambda *a: None)
    path = plan[0].workdir / "summary.json"
    old = json.loads(path.read_text())
    del old["config"]["train"]["labeled_sampling"]       # written before the key existed: its default
    path.write_text(json.dumps(old))
    fake_train.calls.clear()
    execute.execute(plan, lambda rs: None, say=lambda *a: None)
    assert fake_train.calls == []


def test_interrupted_study_writes_what_finished(tmp_path, monkeypatch):
    from boostmis_jax import train

    plan = study.make_plan(study_config(("fixmatch",)), tmp_path, 500)
    done = []

    def run(cfg, workdir):
        if done:
            raise train.Interrupted(15, 3)
        done.append(workdir)
        return fake_summary(cfg)

    monkeypatch.setattr(train, "run", run)
    seen = []
    with pytest.raises(train.Interrupted):
        execute.execute(plan, lambda rs: seen.append(len(rs)), say=lambda *_: None)
    assert seen == [1]


def rows(workdir: Path) -> list[tuple[str, int]]:
    return [(r["method"], r["seed"]) for r in json.loads((workdir / "study.json").read_text())["runs"]]


def test_a_failed_rerun_keeps_every_row_of_the_tables(tmp_path, fake_train):
    """Issue 21 item 6: a study of 4 runs, then one run's state corrupted and the study re-run with one more
    cycle (every run resumes): the failure ends the study in one line, and study.json/study.md keep all 4
    rows until the runs finished under the new plan cover them; the runs that did finish are not lost."""
    cfg = study_config()
    cli.run_study(cfg, tmp_path, say=lambda *_: None)
    assert len(rows(tmp_path)) == 4
    md_before = (tmp_path / "study.md").read_text()

    fake_train.broken.add("boostmis/seed0")                  # its checkpoint no longer restores
    cfg.al.cycles = 3
    lines = []
    with pytest.raises(UserError, match=r"1 run\(s\) failed.*boostmis seed 0"):
        cli.run_study(cfg, tmp_path, say=lines.append)
    assert len(rows(tmp_path)) == 4 and (tmp_path / "study.md").read_text() == md_before
    assert any("kept the earlier study.json" in ln for ln in lines)
    assert len(fake_train.calls) == 4 + 4                    # the other three runs still ran

    fake_train.broken.clear()                                # fixed: the rerun completes the new tables
    cli.run_study(cfg, tmp_path, say=lambda *_: None)
    assert len(rows(tmp_path)) == 4 and len(fake_train.calls) == 4 + 4 + 1
    doc = json.loads((tmp_path / "study.json").read_text())
    assert [len(r["curve"]) for r in doc["runs"]] == [4] * 4


def test_the_primary_endpoint_is_fixed_per_workdir(tmp_path, fake_train):
    cfg = study_config(("boostmis",), (0,))
    cli.run_study(cfg, tmp_path, say=lambda *_: None)
    doc = json.loads((tmp_path / "study.json").read_text())
    assert doc["study"]["primary"] == "aubc/balanced_accuracy"
    cfg.study.primary = "final/macro_f1"
    with pytest.raises(UserError, match="primary .*aubc/balanced_accuracy.* new --workdir"):
        cli.run_study(cfg, tmp_path, say=lambda *_: None)
    cfg.study.primary = "final/nonsense"
    with pytest.raises(UserError, match="study.primary"):
        cli.run_study(cfg, tmp_path / "other", say=lambda *_: None)


def test_worker_count():
    assert execute.worker_count("auto", 100, "cpu", None, 2) == 1
    assert execute.worker_count("auto", 100, "gpu", 130.0, 16) == 8
    assert execute.worker_count("auto", 3, "gpu", 130.0, 16) == 3
    assert execute.worker_count("auto", 100, "gpu", 13.0, 16) == 2
    assert execute.worker_count(4, 2, "cpu", None, 2) == 2
    with pytest.raises(UserError, match="study.workers"):
        execute.worker_count("many", 3, "cpu", None, 2)


def test_eta_prices_ssl_runs_by_the_images_their_steps_train_on():
    def planned(threshold: str) -> PlannedRun:
        cfg = ml_collections.ConfigDict({"ssl": {"threshold": threshold, "uratio": 3},
                                         "train": {"batch_size": 16}})
        return PlannedRun(method=threshold, seed=0, workdir=Path("w"), cfg=cfg, labels=144, steps=1200)

    sup, ssl = planned("none"), planned("boostmis")
    eta = Eta()
    assert eta.left([sup]) is None
    eta.record(sup, 20.0)
    assert eta.left([sup, ssl]) == pytest.approx(20.0 + 20.0 * 7)
    eta.record(ssl, 100.0)
    assert eta.left([ssl, sup]) == pytest.approx(100.0 + 20.0)
