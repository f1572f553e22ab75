"""Starting from zero labels: an unlabeled image folder (built here) through the CLI with the files oracle:
the self-supervised stage, the first queries before any classifier, labels in the CSV, re-runs that train;
the simulated oracle's zero-label run; the folder loader and the one-line errors."""
from pathlib import Path

import numpy as np
import pytest
from helpers import error_line, main_cmd, read_jsonl, run_cmd, summary
from PIL import Image

from boostmis_jax.data import load_dataset
from boostmis_jax.data.split import ensure_split
from boostmis_jax.errors import UserError
from boostmis_jax.oracle import LabelSpace, read_manifest, write_answers

CLASSES = ("normal", "pneumonia")


def _scan(rng, c: int, size: int = 28) -> np.ndarray:
    """Class 0: a bright disc; class 1: stripes; both noisy 8-bit gray."""
    yy, xx = np.mgrid[:size, :size]
    if c == 0:
        r, (cy, cx) = rng.uniform(5, 9), rng.uniform(10, 18, 2)
        img = 200.0 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
    else:
        img = 100.0 + 90.0 * np.sin(rng.uniform(0.5, 0.9) * xx + rng.uniform(0, 6))
    return np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)


def build_unlabeled_folder(root: Path, n_pool: int = 96, n_val: int = 16, seed: int = 0) -> dict[str, int]:
    """root/pool/*.png (unlabeled, in a sub-folder as exports often are) + root/val/<class>/*.png; returns
    the pool's hidden truth {id: class} (what the person labeling knows)."""
    rng = np.random.default_rng(seed)
    (root / "pool").mkdir(parents=True)
    truth = {}
    for i in range(n_pool):
        c = int(rng.integers(2))
        name = f"pool/scan_{i:03d}.png"
        Image.fromarray(_scan(rng, c)).save(root / name)
        truth[name] = c
    for i in range(n_val):
        d = root / "val" / CLASSES[i % 2]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_scan(rng, i % 2)).save(d / f"v_{i:03d}.png")
    return truth


TINY_ZERO = ["--config.model.widths=(8,16)", "--config.train.steps=10", "--config.al.steps_per_cycle=5",
             "--config.train.batch_size=8", "--config.ssl.uratio=2", "--config.selfsup.steps=6",
             "--config.selfsup.batch_size=16", "--config.al.budget=4", "--config.al.chunk=32",
             "--config.train.eval_every=5", "--config.train.log_every=2", "--config.checkpoint.every_steps=3"]


def folder_cmd(wd, folder, *extra, initial: str = "typiclust", cycles: int = 2):
    """The issue's command (configs/pneumonia.py on an unlabeled folder), tiny steps."""
    return main_cmd(wd, "--config.data.source=image_folder", f"--config.data.path={folder}",
                    "--config.data.class_names=normal,pneumonia", "--config.data.num_labels=0",
                    f"--config.al.initial={initial}", "--config.al.oracle=files",
                    f"--config.al.cycles={cycles}",
                    *TINY_ZERO, *extra, config="configs/pneumonia.py")


def label_like_a_person(wd, cycle: int, truth: dict[str, int]) -> list[int]:
    """Fill queries/cycle_N.csv with the true classes, through the writer the annotation page uses."""
    m = read_manifest(cycle, wd)
    answers = {q.index: truth[q.id] for q in m.queries}
    write_answers(wd / "queries" / f"cycle_{cycle}.csv", m.queries, LabelSpace(2, m.class_names), answers)
    return [q.index for q in m.queries]


def test_unlabeled_folder_to_a_trained_classifier(tmp_path):
    folder, wd = tmp_path / "scans", tmp_path / "run"
    truth = build_unlabeled_folder(folder)
    p = run_cmd(folder_cmd(wd, folder))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "self-supervised stage done" in p.stdout and "no labels yet" in p.stdout
    m = read_manifest(0, wd)
    assert len(m.queries) == 8 and len({q.index for q in m.queries}) == 8
    assert m.class_names == list(CLASSES) and m.has_images
    assert all(q.predicted == -1 and q.confidence is None and q.id.startswith("pool/") for q in m.queries)
    assert not (wd / "model").exists() and not (wd / "summary.json").exists()  # no classifier yet
    assert any("selfsup/loss" in r for r in read_jsonl(wd / "metrics.jsonl"))
    assert not any("train/loss" in r for r in read_jsonl(wd / "metrics.jsonl"))

    first = label_like_a_person(wd, 0, truth)
    p = run_cmd(folder_cmd(wd, folder))     # trains the classifier on those 8, then asks for round 2
    assert p.returncode == 0, p.stderr[-3000:]
    assert "phase initial" in p.stdout and "cycle 1: 8 labeled" in p.stdout
    assert (wd / "model").is_dir() and (wd / "queries" / "cycle_1.csv").exists()
    second = label_like_a_person(wd, 1, truth)
    assert not set(first) & set(second)
    p = run_cmd(folder_cmd(wd, folder))
    assert p.returncode == 0, p.stderr[-3000:]
    s = summary(wd)
    assert [c["labeled"] for c in s["cycles"]] == [8, 16] and s["n_active"] == 16
    assert s["val"]["num_examples"] == 16      # the labeled val folder, not the pool
    assert sorted(int(i) for i in s["picks"]) == [0, 1]
    assert [q["selector"] for q in s["picks"]["0"]] == ["typiclust"] * 8


def test_without_a_val_folder_a_share_of_the_answers_validates(tmp_path):
    folder, wd = tmp_path / "scans", tmp_path / "run"
    truth = build_unlabeled_folder(folder, n_val=0)
    cmd = folder_cmd(wd, folder, "--config.al.initial_budget=10", "--config.selfsup.steps=0",
                     initial="random", cycles=1)
    p = run_cmd(cmd)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "no labeled val folder" in p.stderr and "no labeled test folder" in p.stderr
    asked = label_like_a_person(wd, 0, truth)
    p = run_cmd(cmd)
    assert p.returncode == 0, p.stderr[-3000:]
    s = summary(wd)
    assert s["labeled"] == 8 and s["n_active"] == 10           # 0.2 x 10 answers held out
    assert s["val"]["num_examples"] == 2 and s["test"]["num_examples"] == 2
    assert sorted(np.sum(s["val"]["confusion_matrix"], axis=1).tolist()) == [1, 1]   # stratified by answer
    held = {line.split(",")[0] for line in (wd / "test_predictions.csv").read_text().splitlines()[1:]}
    assert held <= {read_manifest(0, wd).queries[k].id for k in range(10)} and len(held) == 2
    trained = {r["labeled"] for r in read_jsonl(wd / "metrics.jsonl") if "train/loss" in r}
    assert trained == {8} and len(asked) == 10


@pytest.mark.parametrize("initial,stage", [("random", 0), ("probcover", 10)])
def test_simulated_oracle_starts_from_zero_labels(tmp_path, initial, stage):
    wd = tmp_path / "sim"
    p = run_cmd(main_cmd(wd, "--config.model.widths=(8,16)", "--config.train.batch_size=16",
                         "--config.ssl.uratio=2", "--config.train.steps=10", "--config.al.steps_per_cycle=5",
                         "--config.data.num_labels=0", "--config.al.cycles=2", "--config.al.budget=5",
                         "--config.al.selectors=random", "--config.al.initial_budget=20",
                         f"--config.al.initial={initial}", f"--config.selfsup.steps={stage}",
                         "--config.selfsup.batch_size=32", "--config.al.chunk=64",
                         "--config.al.knn_block=256"))
    assert p.returncode == 0, p.stderr[-3000:]
    s = summary(wd)
    assert [c["labeled"] for c in s["cycles"]] == [20, 25]     # cycle 0 trained nothing: 20 picked, then 5
    assert s["steps"] == 15 and [q["selector"] for q in s["picks"]["0"]] == [initial] * 20
    assert len({q["index"] for q in s["picks"]["0"]}) == 20
    assert any("selfsup/loss" in r for r in read_jsonl(wd / "metrics.jsonl")) == bool(stage)


def test_folder_loader_reads_an_unlabeled_pool(tmp_path):
    folder = tmp_path / "scans"
    build_unlabeled_folder(folder, n_pool=10, n_val=4)
    cfg = {"source": "image_folder", "path": str(folder), "class_names": "normal,pneumonia", "num_labels": 0}
    ds = load_dataset(cfg)
    assert ds.train_x.shape == (10, 28, 28, 1) and (ds.train_y == -1).all()
    assert ds.class_names == list(CLASSES) and ds.num_classes == 2
    assert sorted(ds.val_y.tolist()) == [0, 0, 1, 1] and ds.train_ids[0] == "pool/scan_000.png"
    assert len(ds.test_y) == 4                   # no test folder: test metrics on the val images (warned)
    assert ensure_split(tmp_path / "wd", cfg, ds.train_y, 0).size == 0
    assert ensure_split(tmp_path / "wd", cfg, ds.train_y, 0).size == 0   # resumed


@pytest.mark.parametrize("extra,needle", [({"num_labels": 5}, "num_labels=0"),
                                          ({"class_names": "normal"}, "class_names"),
                                          ({"group_by": "patient"}, "group_by")])
def test_folder_loader_errors(tmp_path, extra, needle):
    folder = tmp_path / "scans"
    build_unlabeled_folder(folder, n_pool=4, n_val=2)
    cfg = {"source": "image_folder", "path": str(folder), "class_names": "normal,pneumonia", "num_labels": 0}
    with pytest.raises(UserError, match=needle):
        load_dataset({**cfg, **extra})


def test_no_validation_folder_holds_out_answers_or_is_one_line(tmp_path):
    folder = tmp_path / "scans"
    build_unlabeled_folder(folder, n_pool=4, n_val=0)
    cfg = {"source": "image_folder", "path": str(folder), "class_names": "normal,pneumonia", "num_labels": 0}
    assert len(load_dataset(cfg).val_y) == 0       # filled by held-out answers (data.val_share)
    with pytest.raises(UserError, match="val/<class name>"):
        load_dataset({**cfg, "val_share": 0.0})


def test_zero_label_config_errors_are_one_line(tmp_path):
    base = ["--config.data.num_labels=0", "--config.train.steps=5"]
    assert "al.cycles" in error_line(run_cmd(main_cmd(tmp_path / "a", *base)))
    line = error_line(run_cmd(main_cmd(tmp_path / "b", *base, "--config.al.cycles=1",
                                       "--config.al.initial=typiclust")))
    assert "selfsup.steps" in line
    assert "al.initial" in error_line(run_cmd(main_cmd(tmp_path / "c", *base, "--config.al.cycles=1",
                                                       "--config.al.initial=nope")))
