"""End to end through `python -m boostmis_jax.main`: a tiny run, exact resume after SIGKILL, clean
interruption, and one-line errors for bad input."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ROOT, TINY, env, main_cmd, read_jsonl
from helpers import error_line as _error_line
from helpers import run_cmd as run


def cli(workdir, *extra, config="configs/demo.py", steps=20):
    return main_cmd(workdir, f"--config.train.steps={steps}", *TINY, *extra, config=config)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    wd = tmp_path_factory.mktemp("straight")
    p = run(cli(wd, "--config.checkpoint.every_steps=10", steps=30))
    assert p.returncode == 0, p.stderr[-3000:]
    return wd, p


def test_tiny_run_writes_outputs(straight):
    wd, p = straight
    summary = json.loads((wd / "summary.json").read_text())
    for k in ("accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1", "auc",
              "per_class_recall", "confusion_matrix"):
        assert k in summary["test"]
    assert summary["labeled"] == 30
    assert summary["config"]["ssl"]["threshold"] == "boostmis"
    assert "jax" in summary["versions"] and summary["wall_time_s"] > 0
    assert np.asarray(summary["test"]["confusion_matrix"]).sum() == summary["test"]["num_examples"]
    rows = read_jsonl(wd / "metrics.jsonl")
    train = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30]
    assert all(0 <= r["train/mask_rate"] <= 1 and 0.5 <= r["train/threshold"] <= 0.99 for r in train)
    assert any("eval/macro_f1" in r for r in rows)
    assert any("test/macro_f1" in r for r in rows)
    assert (wd / "split.json").exists()
    assert "test  accuracy" in p.stdout
    # the train step compiled once for the whole run
    assert summary["compiles"]["train_step"] == 1


def test_rerun_of_finished_run_resumes_and_reports(straight):
    wd, _ = straight
    before = json.loads((wd / "summary.json").read_text())["test"]
    p = run(cli(wd, "--config.checkpoint.every_steps=10", steps=30))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "resuming from step 30" in p.stdout
    assert json.loads((wd / "summary.json").read_text())["test"] == before


def test_sigkill_then_resume_matches_straight_run(straight, tmp_path):
    wd0, _ = straight
    wd = tmp_path / "killed"
    cmd = cli(wd, "--config.checkpoint.every_steps=10", steps=30)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t0 = time.time()
    ck = wd / "checkpoints"
    while time.time() - t0 < 300:
        done = [d for d in ck.glob("*") if d.name.isdigit() and (d / "commit_success.txt").exists()] \
            if ck.exists() else []
        if done or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (wd / "summary.json").exists(), "the run finished before it could be killed"
    p = run(cmd)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming from step" in p.stdout
    a = json.loads((wd0 / "summary.json").read_text())["test"]
    b = json.loads((wd / "summary.json").read_text())["test"]
    assert a == b
    steps = [r["step"] for r in read_jsonl(wd / "metrics.jsonl") if "train/loss" in r]
    assert steps == sorted(set(steps))  # no duplicated steps after resume
    la = [r["train/loss"] for r in read_jsonl(wd0 / "metrics.jsonl") if "train/loss" in r]
    lb = [r["train/loss"] for r in read_jsonl(wd / "metrics.jsonl") if "train/loss" in r]
    assert la == lb


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    wd = tmp_path / "term"
    cmd = cli(wd, "--config.checkpoint.every_steps=1000", steps=400)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while time.time() - t0 < 300 and not (wd / "metrics.jsonl").exists():
        time.sleep(0.1)
    while time.time() - t0 < 300 and "train/loss" not in (wd / "metrics.jsonl").read_text():
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "re-run the same command to resume" in err
    assert "Traceback" not in err
    steps = [int(d.name) for d in (wd / "checkpoints").glob("*") if d.name.isdigit()]
    assert steps and 0 < max(steps) < 400


def test_unknown_config_key_is_one_line(tmp_path):
    p = run(cli(tmp_path / "w", "--config.train.stepz=5"))
    assert "stepz" in _error_line(p)


def test_corrupt_npz_is_one_line(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    p = run(cli(tmp_path / "w", f"--config.data.path={bad}", config="configs/pneumonia.py"))
    assert "bad.npz" in _error_line(p)


def test_label_out_of_range_is_one_line(tmp_path):
    f = tmp_path / "nine.npz"
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 60), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1))
    arrays["train_labels"][3] = 9
    np.savez(f, **arrays)
    p = run(cli(tmp_path / "w", f"--config.data.path={f}", "--config.data.num_classes=2",
                "--config.data.num_labels=10", config="configs/pneumonia.py"))
    line = _error_line(p)
    assert "9" in line and "nine.npz" in line


def test_corrupt_checkpoint_is_an_error_not_a_restart(straight, tmp_path):
    import shutil
    wd0, _ = straight
    wd = tmp_path / "corrupt"
    shutil.copytree(wd0, wd)
    summary_before = (wd / "summary.json").read_bytes()
    latest = max(int(d.name) for d in (wd / "checkpoints").glob("*") if d.name.isdigit())
    for f in (wd / "checkpoints" / str(latest) / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"garbage")
    p = run(cli(wd, "--config.checkpoint.every_steps=10", steps=30))
    line = _error_line(p)
    assert "checkpoint" in line and str(latest) in line
    assert (wd / "summary.json").read_bytes() == summary_before


def _mescc(folder, *, nan=False, short_targets=False):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for split, n in (("train", 60), ("val", 10), ("test", 10)):
        f = rng.normal(size=(n, 16)).astype(np.float32)
        t = rng.integers(0, 2, n)
        if split == "train" and nan:
            f[3, 2] = np.nan
        if split == "train" and short_targets:
            t = t[:-5]
        np.save(folder / f"{split}-features.npy", f)
        np.save(folder / f"{split}-targets.npy", t)
    return folder


def test_nan_features_is_one_line(tmp_path):
    d = _mescc(tmp_path / "nan", nan=True)
    p = run(cli(tmp_path / "w", f"--config.data.path={d}", config="configs/mescc.py"))
    line = _error_line(p)
    assert "NaN" in line and "train-features.npy" in line


def test_wrong_label_count_is_one_line(tmp_path):
    d = _mescc(tmp_path / "short", short_targets=True)
    p = run(cli(tmp_path / "w", f"--config.data.path={d}", config="configs/mescc.py"))
    assert "train-targets.npy" in _error_line(p)


def test_missing_config_file_is_one_line(tmp_path):
    p = run([sys.executable, "-m", "boostmis_jax.main", "--config=configs/nope.py", f"--workdir={tmp_path}"])
    assert "nope.py" in _error_line(p)
