"""Active-learning cycles through the CLI: simulated oracle (picks, compile counts, learning curve),
the files oracle as a person uses it (run, fill CSV, re-run), and resume mid-cycle giving the same picks."""
import csv
import json
from pathlib import Path

import pytest
from helpers import TINY, TINY_AL, main_cmd, read_jsonl, run_cmd


def run(workdir, *extra, devices=1):
    return run_cmd(main_cmd(workdir, *TINY, *TINY_AL, *extra), devices=devices)


def rows(wd):
    return read_jsonl(Path(wd) / "metrics.jsonl")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    wd = tmp_path_factory.mktemp("al_sim")
    p = run(wd, "--config.al.cycles=2", "--config.checkpoint.every_steps=5", "--config.checkpoint.keep=20")
    assert p.returncode == 0, p.stderr[-3000:]
    return wd


def test_cycles_grow_the_labeled_set_without_recompiling(simulated):
    s = json.loads((simulated / "summary.json").read_text())
    labeled = [c["labeled"] for c in s["cycles"]]
    assert labeled == [30, 38, 46]                       # aus + bus, K=4 each, distinct picks
    assert s["n_active"] == 16
    assert s["compiles"]["train_step"] == 1              # growing the labeled set never recompiles
    assert s["compiles"]["scorer"] == 1                  # nor does scoring a pool with new masks/weights
    cyc = [r for r in rows(simulated) if "test/macro_f1" in r]
    assert [r["cycle"] for r in cyc] == [0, 1, 2] and [r["labeled"] for r in cyc] == labeled
    assert (simulated / "learning_curve.png").stat().st_size > 1000


def test_picks_are_new_distinct_and_recorded(simulated):
    split = json.loads((simulated / "split.json").read_text())["labeled"]
    meta = json.loads((simulated / "summary.json").read_text())
    picked = [p["index"] for c in meta["picks"].values() for p in c]
    assert len(picked) == len(set(picked)) == 16
    assert not set(picked) & set(split)
    assert {p["selector"] for c in meta["picks"].values() for p in c} == {"aus", "bus"}


def test_threshold_rises_with_annotations(simulated):
    thr = {r["cycle"]: r["train/threshold"] for r in rows(simulated) if "train/threshold" in r}
    # after one cycle (N_A = 2K) the formula adds b = 0.05 on top of a = 0.9 while the status holds
    assert thr[2] > thr[0]
    # N_A counts the latest round only: tau never climbs past a + b, however many rounds
    assert max(r["train/threshold"] for r in rows(simulated) if "train/threshold" in r) <= 0.9 + 0.05 + 1e-6


def test_resume_mid_cycle_gives_same_picks(simulated, tmp_path):
    import shutil
    wd = tmp_path / "resume"
    shutil.copytree(simulated, wd)
    ck = wd / "checkpoints"
    steps = sorted(int(d.name) for d in ck.iterdir() if d.name.isdigit())
    # drop the newest checkpoints so the run resumes inside cycle 1 and redoes acquisition for cycle 1
    for s in steps:
        if s > 25:
            shutil.rmtree(ck / str(s))
    (wd / "summary.json").unlink()
    p = run(wd, "--config.al.cycles=2", "--config.checkpoint.every_steps=5", "--config.checkpoint.keep=20")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming from step 25" in p.stdout
    a = json.loads((simulated / "summary.json").read_text())
    b = json.loads((wd / "summary.json").read_text())
    assert [c["labeled"] for c in a["cycles"]] == [c["labeled"] for c in b["cycles"]]
    assert a["test"] == b["test"]


def test_files_oracle_round_trip(tmp_path):
    wd = tmp_path / "files"
    args = ("--config.al.cycles=1", "--config.al.oracle=files")
    p = run(wd, *args)
    assert p.returncode == 0, p.stderr[-3000:]
    q = wd / "queries" / "cycle_0.csv"
    assert q.exists() and (wd / "queries" / "cycle_0.png").exists()
    assert "cycle_0.csv" in p.stdout
    assert not (wd / "summary.json").exists()
    with q.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and set(table[0]) >= {"index", "id", "selector", "score", "predicted", "label"}
    # a partially filled file is rejected with one line and changes nothing
    table[0]["label"] = "3"
    with q.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    before = sorted(p.name for p in (wd / "checkpoints").iterdir())
    p = run(wd, *args)
    assert p.returncode == 2 and "label is empty" in p.stderr and "Traceback" not in p.stderr
    assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == before
    for r in table:
        r["label"] = r["predicted"]
    with q.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    p = run(wd, *args)
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((wd / "summary.json").read_text())
    assert [c["labeled"] for c in s["cycles"]] == [30, 38]


def test_budget_larger_than_the_pool_is_clipped_and_an_exhausted_pool_ends_the_run(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    f = tmp_path / "small.npz"
    arrays = {}
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        arrays[f"{split}_labels"] = (np.arange(n) % 2)[:, None]
        arrays[f"{split}_images"] = (rng.integers(0, 80, (n, 8, 8)) + 120 * arrays[f"{split}_labels"][:, :, None]
                                     ).astype(np.uint8)
    np.savez(f, **arrays)
    wd = tmp_path / "w"
    p = run(wd, "--config.data.source=medmnist_npz", f"--config.data.path={f}", "--config.al.cycles=3",
            "--config.al.budget=20", "--config.train.batch_size=8", "--config.al.chunk=16")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "fewer than al.budget" in p.stderr and "every train row is labeled" in p.stdout
    s = json.loads((wd / "summary.json").read_text())
    assert [c["labeled"] for c in s["cycles"]] == [30, 60]
