"""The study command: the grid at equal labels and steps, skip/resume, aggregation on hand-made results, the
example data writers, and a 2-method x 2-seed micro study end to end through the CLI."""
import json
import sys

import numpy as np
import pytest
from helpers import ROOT, run_cmd

from boostmis_jax import study
from boostmis_jax.data import load_dataset
from boostmis_jax.defaults import get_config
from boostmis_jax.errors import UserError
from boostmis_jax.state import Cycles


def study_config(methods=tuple(study.METHODS), seeds=(0, 1), **al):
    cfg = get_config()
    cfg.data.num_labels = 20
    cfg.train.steps = 30
    cfg.al.update({"cycles": 2, "steps_per_cycle": 10, "budget": 5, **al})
    cfg.study = study.study_section(methods, seeds, "reduced")
    return cfg


# ------------------------------------------------------------------------------------------------ the grid
def test_grid_expands_to_every_method_and_seed_at_equal_labels_and_steps(tmp_path):
    plan = study.make_plan(study_config(), tmp_path, n_train=500)
    assert [(p.method, p.seed) for p in plan] == [(m, s) for s in (0, 1) for m in study.METHODS]
    assert len({p.workdir for p in plan}) == len(plan)
    assert plan[0].workdir == tmp_path / "runs" / "supervised" / "seed0"
    for p in plan:
        c, m = p.cfg, study.METHODS[p.method]
        assert "study" not in c and c.seed == p.seed and c.ssl.threshold == m.threshold
        total = Cycles.from_config(c.train.steps, c.al.steps_per_cycle).end_step(c.al.cycles)
        assert total == p.steps == 30 + 2 * 10                       # equal steps
        if m.active:  # starts at num_labels and annotates aus+bus's 2 x 5 per round
            per_round = c.al.budget * len(c.al.selectors.split("+"))
            assert (c.data.num_labels, c.al.cycles, per_round, c.al.selectors) == (20, 2, 10, m.selectors)
            assert c.data.num_labels + c.al.cycles * per_round == p.labels == 40
        else:         # the AL arms' final count drawn up front, one stage of every step
            assert (c.al.cycles, c.train.steps) == (0, 50)
            assert c.data.num_labels == p.labels == (500 if p.method == "full_supervised" else 40)
    by = {p.method: p.cfg for p in plan if p.seed == 0}
    assert (by["boostmis"].al.budget, by["random_al"].al.budget) == (5, 10)
    assert by["aus_only"].al.selectors == "aus" and by["bus_only"].al.budget == 10
    assert (by["supervised"].ssl.threshold, by["fixmatch"].ssl.threshold) == ("none", "fixed")
    assert by["full_supervised"].ssl.threshold == "none"


def test_steps_per_cycle_zero_means_train_steps_per_cycle(tmp_path):
    plan = study.make_plan(study_config(("fixmatch", "boostmis"), (3,), steps_per_cycle=0), tmp_path, 500)
    assert [p.steps for p in plan] == [90, 90] and plan[0].cfg.train.steps == 90


@pytest.mark.parametrize("change, match", [
    ({"methods": "boostmis,nope"}, "unknown"),
    ({"methods": "fixmatch,fixmatch"}, "repeats"),
    ({"seeds": "0,x"}, "integers"),
])
def test_bad_study_keys_are_one_line_errors(tmp_path, change, match):
    cfg = study_config()
    cfg.study.update(change)
    with pytest.raises(UserError, match=match):
        study.make_plan(cfg, tmp_path, 500)


def test_al_arm_without_cycles_and_files_oracle_are_refused(tmp_path):
    cfg = study_config(("boostmis",))
    cfg.al.cycles = 0
    with pytest.raises(UserError, match="al.cycles=0"):
        study.make_plan(cfg, tmp_path, 500)
    cfg = study_config(("fixmatch",))
    cfg.al.oracle = "files"
    with pytest.raises(UserError, match="simulated"):
        study.make_plan(cfg, tmp_path, 500)


def test_preset_override_rebuilds_the_config_and_user_overrides_still_win():
    cfg = study.resolve_preset(None, str(ROOT / "configs/study_digits.py"),
                               {"study.preset": "full", "train.steps": 7, "study.seeds": "4"})
    assert (cfg.study.preset, tuple(cfg.model.widths), cfg.train.steps, cfg.study.seeds) == (
        "full", (32, 64, 128), 7, "4")
    with pytest.raises(UserError, match="preset"):
        study.resolve_preset(None, str(ROOT / "configs/study_digits.py"), {"study.preset": "huge"})


# ----------------------------------------------------------------------------------------- skip / resume
def fake_summary(cfg, f1=0.5):
    metrics = {"accuracy": f1, "balanced_accuracy": f1, "macro_f1": f1, "auc": f1,
               "per_class_recall": [f1, f1], "confusion_matrix": [[1, 0], [0, 1]]}
    return {"test": metrics, "val": metrics, "labeled": int(cfg.data.num_labels), "n_active": 0,
            "steps": int(cfg.train.steps), "wall_time_s": 1.0, "config": cfg.to_dict(),
            "cycles": [{"cycle": 0, "labeled": int(cfg.data.num_labels), "test": metrics, "val": metrics}]}


@pytest.fixture
def fake_train(monkeypatch):
    """train.run stand-in: records its calls and writes summary.json as the real one does."""
    from boostmis_jax import train
    from boostmis_jax.reporting import write_json_atomic

    calls = []

    def run(cfg, workdir):
        calls.append(workdir)
        s = fake_summary(cfg)
        write_json_atomic(f"{workdir}/summary.json", s)
        return s

    monkeypatch.setattr(train, "run", run)
    return calls


def test_finished_runs_are_skipped_and_unfinished_ones_go_back_to_train_run(tmp_path, fake_train):
    plan = study.make_plan(study_config(("fixmatch", "boostmis")), tmp_path, 500)
    lines = []
    results = study.execute(plan, lambda rs: None, say=lines.append)
    assert fake_train == [str(p.workdir) for p in plan] and len(results) == 4
    assert any("run 1/4 fixmatch seed 0" in ln and "ETA" in ln for ln in lines)

    fake_train.clear()
    again = study.execute(plan, lambda rs: None, say=lines.append)
    assert fake_train == [] and [r["test"] for r in again] == [r["test"] for r in results]
    assert sum("finished earlier, skipped" in ln for ln in lines) == 4

    (plan[3].workdir / "summary.json").unlink()            # interrupted: train.run resumes it
    plan[1].cfg.train.log_every = 7                          # cadence only: still the same run
    plan[2].cfg.train.lr = 0.5                               # a different run: not skipped
    study.execute(plan, lambda rs: None, say=lines.append)
    assert fake_train == [str(plan[2].workdir), str(plan[3].workdir)]


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
        study.execute(plan, lambda rs: seen.append(len(rs)), say=lambda *_: None)
    assert seen == [1]


# ------------------------------------------------------------------------------------------- aggregation
def record(method, seed, f1, auc=0.9):
    t = {"accuracy": f1 + 0.05, "balanced_accuracy": f1, "macro_f1": f1, "auc": auc,
         "per_class_recall": [f1, f1], "confusion_matrix": [[3, 1], [0, 4]]}
    return {"method": method, "seed": seed, "labeled": 40, "steps": 50, "wall_time_s": 2.0, "test": t,
            "val": {**t, "macro_f1": f1 - 0.01}, "curve": [{"cycle": 0, "labeled": 40, "test_macro_f1": f1,
                                                             "val_macro_f1": f1}]}


def hand_runs():
    return ([record("boostmis", s, f) for s, f in zip((0, 1, 2), (0.85, 0.80, 0.75))]
            + [record("fixmatch", s, f, auc) for s, f, auc in zip((0, 1, 2, 3), (0.80, 0.90, 0.70, 0.99),
                                                                    (0.9, None, 0.8, 0.7))]
            + [record("full_supervised", 0, 0.95)])


def test_mean_std_and_paired_differences_on_hand_made_runs():
    runs = hand_runs()
    agg = study.aggregate(runs)
    f = agg["fixmatch"]["test"]["macro_f1"]
    assert f["n"] == 4 and f["mean"] == pytest.approx(0.8475)
    assert f["std"] == pytest.approx(np.std([0.8, 0.9, 0.7, 0.99], ddof=1))
    assert agg["fixmatch"]["test"]["auc"]["n"] == 3               # a missing AUC is left out, not a zero
    assert agg["full_supervised"]["test"]["macro_f1"] == {"mean": 0.95, "std": None, "n": 1}
    d = study.paired(runs)["fixmatch"]["macro_f1"]                # seed 3 has no boostmis partner
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.0)
    assert d["std"] == pytest.approx(np.std([-0.05, 0.10, -0.05], ddof=1))
    assert study.paired(runs)["fixmatch"]["auc"]["n"] == 2
    assert "boostmis" not in study.paired(runs)
    assert study.median_run([r for r in runs if r["method"] == "boostmis"])["seed"] == 1
    assert study.paired([r for r in runs if r["method"] != "boostmis"]) == {}


def test_table_has_mean_std_rows_paired_rows_and_the_published_reference():
    meta = {"config": "c.py", "preset": "reduced", "methods": ["boostmis", "fixmatch", "full_supervised"]}
    md = study.render_markdown(meta, hand_runs(), "medmnist_v2_pneumonia")
    lines = md.splitlines()
    row = next(ln for ln in lines if ln.startswith("| FixMatch"))
    assert "| 4 | 40 | 50 |" in row and f"0.8475 ± {np.std([0.8, 0.9, 0.7, 0.99], ddof=1):.4f}" in row
    full = next(i for i, ln in enumerate(lines) if ln.startswith("| every train label"))
    assert "0.944" in lines[full + 1] and "ResNet-18" in lines[full + 1] and "0.962" in lines[full + 2]
    assert "Yang et al., MedMNIST v2, Scientific Data 2023" in md
    paired_row = next(ln for ln in lines if ln.startswith("| `fixmatch` | 3 |"))
    assert f"+0.0000 ± {np.std([-0.05, 0.10, -0.05], ddof=1):.4f}" in paired_row
    assert "ResNet-18" not in study.render_markdown(meta, hand_runs(), "")


# ------------------------------------------------------------------------------------------ example data
def test_example_data_is_written_in_the_layouts_the_loaders_read(tmp_path):
    s = study.study_section(["boostmis"], [0], "reduced")
    path = study.write_digits_longtail(s, tmp_path)
    cfg = get_config()
    cfg.data.update(source="medmnist_npz", path=str(path))
    ds = load_dataset(cfg.data)
    counts = np.bincount(ds.train_y).tolist()
    assert ds.num_classes == 6 and counts == study.longtail_counts(counts[0], 6, 10.0)
    assert counts == sorted(counts, reverse=True) and counts[0] / counts[-1] == pytest.approx(10, rel=0.1)
    assert np.ptp(np.bincount(ds.test_y)) <= 3 and np.ptp(np.bincount(ds.val_y)) <= 3   # ~balanced eval

    root = study.write_breast_cancer_mescc(s, tmp_path)
    cfg.data.update(source="mescc_features", path=str(root))
    ds = load_dataset(cfg.data)
    assert ds.kind == "features" and len(ds.train_y) + len(ds.val_y) + len(ds.test_y) == 569


# ------------------------------------------------------------------------------------- end to end (CLI)
MICRO = ["--config=configs/study_digits.py", "--config.study.methods=supervised,boostmis",
         "--config.study.seeds=0,1", "--config.data.num_labels=12", "--config.train.steps=8",
         "--config.al.cycles=1", "--config.al.steps_per_cycle=4", "--config.al.budget=3",
         "--config.model.widths=(8,16)", "--config.train.batch_size=8", "--config.ssl.uratio=2",
         "--config.train.log_every=4", "--config.train.eval_every=4", "--config.checkpoint.every_steps=4",
         "--config.al.chunk=64", "--config.al.knn_block=256"]


def study_cmd(workdir):
    return [sys.executable, "-m", "boostmis_jax.study", f"--workdir={workdir}", *MICRO]


def test_minority_cut_keeps_other_classes_and_eval_splits_and_hits_the_share(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {f"{sp}_{k}": (rng.integers(0, 255, (n, 8, 8), dtype=np.uint8) if k == "images"
                            else rng.permutation(np.arange(n) % 4 < 1 + 2 * (sp == "train"))[:, None].astype(int))
              for sp, n in (("train", 400), ("val", 40), ("test", 60)) for k in ("images", "labels")}
    src = tmp_path / "src.npz"
    np.savez(src, **arrays)
    out = study.write_minority_cut(src, 0.1, tmp_path / "data")
    with np.load(out) as z:
        y = z["train_labels"][:, 0]
        np.testing.assert_array_equal(z["test_labels"], arrays["test_labels"])
        np.testing.assert_array_equal(z["val_images"], arrays["val_images"])
        kept = z["train_images"]
    assert (y == 1).sum() == 300 and (y == 0).sum() == round(0.1 / 0.9 * 300)   # class 0 was the rarer
    src_rows = {r.tobytes() for r in arrays["train_images"]}
    assert all(r.tobytes() in src_rows for r in kept)                          # rows copied, never made up
    with pytest.raises(UserError, match="already"):
        study.write_minority_cut(src, 0.45, tmp_path / "data2")


def test_micro_study_end_to_end_then_skips_and_resumes(tmp_path):
    p = run_cmd(study_cmd(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "[study] run 4/4 boostmis seed 1" in p.stdout and "ETA" in p.stdout
    doc = json.loads((tmp_path / "study.json").read_text())
    runs = doc["runs"]
    assert [(r["method"], r["seed"]) for r in runs] == [("supervised", 0), ("boostmis", 0), ("supervised", 1),
                                                         ("boostmis", 1)]
    assert {r["labeled"] for r in runs} == {12 + 6} and {r["steps"] for r in runs} == {12}
    assert [c["labeled"] for c in runs[1]["curve"]] == [12, 18] and runs[1]["n_active"] == 6
    assert sum(runs[1]["annotated_per_class"]) == 6 and sum(runs[0]["annotated_per_class"]) == 0
    assert len(runs[1]["annotated_per_round"]) == 1 and sum(runs[1]["annotated_per_round"][0]) == 6
    assert all(len(c["test_per_class_recall"]) == 6 for c in runs[1]["curve"])
    assert doc["paired"]["supervised"]["macro_f1"]["n"] == 2
    assert doc["aggregate"]["boostmis"]["test"]["macro_f1"]["n"] == 2
    assert (tmp_path / "data" / "digits_longtail_c6_r10.npz").exists()
    md = (tmp_path / "study.md").read_text()
    assert "BoostMIS (AUS+BUS) (`boostmis`) | 2 | 18 | 12 |" in md and "| `supervised` | 2 |" in md
    assert "## Picks and test recall per class after each cycle" in md
    for png in ("f1_vs_labels.png", "confusion_matrices.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (tmp_path / "runs" / "boostmis" / "seed1" / "summary.json").unlink()   # as if killed before the end
    p = run_cmd(study_cmd(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("finished earlier, skipped") == 3
    assert "resuming from step 12" in p.stdout
    again = json.loads((tmp_path / "study.json").read_text())["runs"]
    assert [r["test"] for r in again] == [r["test"] for r in runs]


def test_cli_bad_method_is_one_line(tmp_path):
    p = run_cmd([*study_cmd(tmp_path), "--config.study.methods=boostmis,fixmach", "--dry_run"])
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: study.methods: unknown or empty ['fixmach']")


def test_picks_table_sums_picks_over_seeds_and_averages_recall():
    def run(rounds, recalls):
        return {"annotated_per_round": rounds,
                "curve": [{"test_per_class_recall": r} for r in recalls]}
    rs = [run([[1, 3], [0, 4]], [[0.5, 1.0], [0.4, 1.0], [0.2, 1.0]]),
          run([[2, 2], [1, 3]], [[0.7, 0.9], [0.6, 0.8], [0.4, 0.9]])]
    lines = study.picks_table({"boostmis": rs}, 3)
    row = lines[-1]
    assert row.startswith("| `boostmis` |")
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert cells[0] == "recall 0.600/0.950"
    assert cells[1] == "picks 3/5; recall 0.500/0.900"
    assert cells[2] == "picks 1/7; recall 0.300/0.950"


def test_eta_prices_ssl_runs_by_the_images_their_steps_train_on():
    """After one cheap supervised run, an SSL run ahead (B + 2 x uratio x B images a step) is not priced
    like it: the study's ETA was 8x too low after run 1 of the pneumonia study."""
    from pathlib import Path

    import ml_collections

    from boostmis_jax.study import Eta, PlannedRun

    def planned(threshold: str) -> PlannedRun:
        cfg = ml_collections.ConfigDict({"ssl": {"threshold": threshold, "uratio": 3},
                                         "train": {"batch_size": 16}})
        return PlannedRun(method=threshold, seed=0, workdir=Path("w"), cfg=cfg, labels=144, steps=1200)

    sup, ssl = planned("none"), planned("boostmis")
    eta = Eta()
    assert eta.left([sup]) is None
    eta.record(sup, 20.0)
    assert eta.left([sup, ssl]) == pytest.approx(20.0 + 20.0 * 7)  # 16 vs 16 + 2 x 3 x 16 images a step
    eta.record(ssl, 100.0)  # once an SSL run is measured, its own rate prices the SSL runs
    assert eta.left([ssl, sup]) == pytest.approx(100.0 + 20.0)
