"""Prediction and the portable model.

In process: a small model exported with `save_model` (weights and an input recipe from a real Dataset) and
`predict.main` on folders, npz and npy inputs over the 8 test devices; the CSV equals the model applied by
hand; every bad input is one line, exit 2, nothing written.
End to end (the loop writes DIR/model at each cycle end): train the demo CLI on an image folder, predict a
held-out copy of its test images -> the run's own test probabilities; again with the checkpoints deleted;
a DICOM folder trains and predicts through the CLI.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import TINY, error_line, main_cmd, run_cmd, summary
from PIL import Image

from boostmis_jax import predict
from boostmis_jax.data import load_dataset
from boostmis_jax.export import data_meta, load_model, save_model
from boostmis_jax.models import build_model
from boostmis_jax.reporting import read_predictions

RNG = np.random.default_rng(0)
CLASSES = ["dog", "cat"]  # not sorted: class order is the training folders' sorted names (cat, dog)


def pattern(cls: int, size: int = 8, seed: int = 0) -> np.ndarray:
    """Class 0 bright on top, class 1 bright at the bottom, plus noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (size, size)).astype(np.int32)
    half = slice(0, size // 2) if cls == 0 else slice(size // 2, size)
    img[half] += 150
    return np.clip(img, 0, 255).astype(np.uint8)


def write_folder(root: Path, per_class: int, size: int = 8, seed: int = 0, suffix: str = ".png") -> dict:
    """root/<cat|dog>/<i>.png; returns {relative id: (array, class index in sorted order)}."""
    out = {}
    for c, name in enumerate(sorted(CLASSES)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = pattern(c, size, seed * 1000 + c * 100 + i)
            Image.fromarray(arr).save(root / name / f"{i}{suffix}")
            out[f"{name}/{i}{suffix}"] = (arr, c)
    return out


def data_cfg(path: Path, **kw) -> ml_collections.ConfigDict:
    base = {"source": "image_folder", "path": str(path), "num_labels": 4, "split_file": "", "val_fraction": 0.2,
            "test_fraction": 0.2, "image_size": 0, "num_classes": 0}
    base.update(kw)
    return ml_collections.ConfigDict(base)


def model_cfg(name: str = "cnn") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"name": name, "dtype": "float32", "bn_momentum": 0.9, "widths": (4, 8),
                                      "hidden": (16,)})


def export(tmp_path: Path, ds, dcfg, mcfg=None, seed: int = 1) -> Path:
    """A model with random weights and non-trivial BN statistics, exported as a run would."""
    mcfg = mcfg or model_cfg()
    model = build_model(mcfg, ds.num_classes)
    v = model.init(jax.random.key(seed), jnp.zeros((1, *ds.train_x.shape[1:])), train=False)
    v = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(seed + 1), a.shape), v)
    v = {"params": v["params"], "batch_stats": jax.tree.map(jnp.abs, v["batch_stats"])}
    return save_model(tmp_path / "run" / "model", variables=v, model_config=mcfg.to_dict(),
                      data_meta=data_meta(ds, dcfg), class_names=ds.class_names, info={"step": 1})


def by_hand(model_dir: Path, x: np.ndarray) -> np.ndarray:
    """The model applied to raw inputs without predict.py: uint8 -> /255 -> (x - mean) / std -> softmax."""
    pm = load_model(model_dir)
    xf = np.asarray(x, np.float32)
    if pm.kind == "image":
        xf = (xf / 255.0 - pm.mean) / pm.std
    logits, _ = pm.model.apply(pm.variables, jnp.asarray(xf), train=False)
    return np.asarray(jax.nn.softmax(logits, -1))


def call(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = predict.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image_model")
    write_folder(tmp / "train", 6)
    dcfg = data_cfg(tmp / "train")
    ds = load_dataset(dcfg)
    return export(tmp, ds, dcfg), ds


def test_model_folder_round_trip(image_model):
    model_dir, ds = image_model
    pm = load_model(model_dir)
    assert sorted(p.name for p in model_dir.iterdir()) == ["arrays", "model.json"]
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["class_names"] == ["cat", "dog"] and meta["data"]["input_shape"] == [8, 8, 1]
    assert {"jax", "flax", "orbax", "boostmis_jax"} <= set(meta["versions"])
    assert pm.kind == "image" and pm.channels == 1 and pm.num_classes == 2
    np.testing.assert_array_equal(pm.mean, ds.mean)
    assert load_model(model_dir.parent).path == model_dir  # a run's workdir works too


def test_save_model_replaces_the_previous_one(tmp_path, image_model):
    _, ds = image_model
    dcfg = data_cfg(tmp_path)
    first = export(tmp_path, ds, dcfg, seed=1)
    a = load_model(first).variables
    second = export(tmp_path, ds, dcfg, seed=7)
    b = load_model(second).variables
    assert first == second
    assert not np.array_equal(a["params"]["Dense_0"]["kernel"], b["params"]["Dense_0"]["kernel"])
    assert sorted(p.name for p in first.parent.iterdir()) == ["model"]  # no tmp/old folders left


def test_labeled_folder_matches_the_model_and_writes_metrics(tmp_path, image_model, capsys):
    model_dir, _ = image_model
    items = write_folder(tmp_path / "new", 5, seed=3)  # 10 rows: padded to the 8 devices' batch
    out = tmp_path / "pred.csv"
    rc, stdout, err = call(["--model", model_dir, "--input", tmp_path / "new", "--output", out], capsys)
    assert rc == 0, err
    ids, probs, names = read_predictions(out)
    assert names == ["cat", "dog"] and sorted(ids) == sorted(items)
    want = by_hand(model_dir, np.stack([items[i][0][..., None] for i in ids]))
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)
    rows = out.read_text().splitlines()
    assert rows[0] == "id,predicted,predicted_name,prob_cat,prob_dog,label,label_name"
    assert rows[1].split(",")[-1] in ("cat", "dog")
    metrics = json.loads((tmp_path / "pred.metrics.json").read_text())
    labels = np.array([items[i][1] for i in ids])
    assert metrics["num_examples"] == 10
    assert metrics["accuracy"] == pytest.approx(float(np.mean(np.argmax(want, 1) == labels)))
    assert "macro-F1" in stdout and str(out) in stdout


def test_unlabeled_nested_folder_and_single_file(tmp_path, image_model, capsys):
    model_dir, _ = image_model
    for patient in ("p1", "p2"):
        write_folder(tmp_path / "scans" / patient, 2, seed=5)
    out = tmp_path / "u.csv"
    rc, _, err = call(["--workdir", model_dir.parent, "--input", tmp_path / "scans", "--output", out], capsys)
    assert rc == 0, err
    ids, probs, _ = read_predictions(out)
    assert len(ids) == 8 and ids[0] == "p1/cat/0.png" and probs.shape == (8, 2)
    assert "label" not in out.read_text().splitlines()[0] and not (tmp_path / "u.metrics.json").exists()
    rc, _, err = call(["--model", model_dir, "--input", tmp_path / "scans/p1/dog/1.png", "--output",
                       tmp_path / "one.csv"], capsys)
    assert rc == 0, err
    assert read_predictions(tmp_path / "one.csv")[0] == ["1.png"]


def test_default_output_name(tmp_path, image_model, capsys, monkeypatch):
    model_dir, _ = image_model
    write_folder(tmp_path / "incoming", 1)
    monkeypatch.chdir(tmp_path)
    rc, _, err = call(["--model", model_dir, "--input", "incoming"], capsys)
    assert rc == 0, err
    assert (tmp_path / "incoming.predictions.csv").is_file()


def test_resize_and_rgb_as_at_training(tmp_path, capsys):
    write_folder(tmp_path / "train", 6, size=10)
    dcfg = data_cfg(tmp_path / "train", image_size=6)
    ds = load_dataset(dcfg)
    model_dir = export(tmp_path, ds, dcfg)
    (tmp_path / "new").mkdir()
    arr = pattern(1, 12, 9)
    Image.fromarray(np.repeat(arr[..., None], 3, -1)).save(tmp_path / "new" / "gray_as_rgb.png")
    rc, _, err = call(["--model", model_dir, "--input", tmp_path / "new", "--output", tmp_path / "p.csv"], capsys)
    assert rc == 0, err
    from boostmis_jax.data.image_folder import resize_images
    want = by_hand(model_dir, resize_images(arr[None, ..., None], 6))
    np.testing.assert_allclose(read_predictions(tmp_path / "p.csv")[1], want, rtol=1e-5, atol=1e-6)


def test_npz_split_and_features(tmp_path, capsys):
    # images: a MedMNIST-layout npz, predicted on its test split, labels known
    x = np.stack([pattern(i % 2, 8, i) for i in range(40)])
    y = np.arange(40) % 2
    np.savez(tmp_path / "m.npz", train_images=x[:30], train_labels=y[:30, None], test_images=x[30:],
             test_labels=y[30:, None], val_images=x[:5], val_labels=y[:5, None])
    dcfg = data_cfg(tmp_path / "m.npz", source="medmnist_npz")
    ds = load_dataset(dcfg)
    model_dir = export(tmp_path / "img", ds, dcfg)
    rc, _, err = call(["--model", model_dir, "--input", tmp_path / "m.npz", "--output", tmp_path / "t.csv"], capsys)
    assert rc == 0, err
    np.testing.assert_allclose(read_predictions(tmp_path / "t.csv")[1], by_hand(model_dir, ds.test_x), atol=1e-6)
    rc, _, err = call(["--model", model_dir, "--input", tmp_path / "m.npz", "--split", "val", "--output",
                       tmp_path / "v.csv"], capsys)
    assert rc == 0 and len(read_predictions(tmp_path / "v.csv")[0]) == 5
    # features: a MESCC folder's test-features.npy, standardized with the model's train statistics
    f = tmp_path / "feat"
    f.mkdir()
    for split, n in (("train", 40), ("val", 10), ("test", 12)):
        np.save(f / f"{split}-features.npy", RNG.normal(2.0, 3.0, (n, 6)).astype(np.float32))
        np.save(f / f"{split}-targets.npy", np.arange(n) % 3)
    fcfg = data_cfg(f, source="mescc_features")
    fds = load_dataset(fcfg)
    fmodel = export(tmp_path / "feat_run", fds, fcfg, model_cfg("mlp"))
    rc, _, err = call(["--model", fmodel, "--input", f / "test-features.npy", "--output", tmp_path / "f.csv"],
                      capsys)
    assert rc == 0, err
    np.testing.assert_allclose(read_predictions(tmp_path / "f.csv")[1], by_hand(fmodel, fds.test_x), atol=1e-6)
    assert json.loads((tmp_path / "f.metrics.json").read_text())["num_examples"] == 12
    rc, _, err = call(["--model", fmodel, "--input", f, "--split", "val", "--output", tmp_path / "fv.csv"], capsys)
    assert rc == 0 and len(read_predictions(tmp_path / "fv.csv")[0]) == 10


# ------------------------------------------------------------------------------------------ bad input


def bad(argv, capsys, *names, out: Path | None = None) -> str:
    rc, _, err = call(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    if out is not None:
        assert not out.exists() and not predict.metrics_path(out).exists()
    return lines[0]


def test_bad_inputs_are_one_line_and_write_nothing(tmp_path, image_model, capsys):
    model_dir, _ = image_model
    out = tmp_path / "never.csv"
    m = ["--model", model_dir, "--output", out]
    write_folder(tmp_path / "broken", 2)
    (tmp_path / "broken" / "cat" / "9.png").write_bytes(b"not a png")
    bad([*m, "--input", tmp_path / "broken"], capsys, "9.png", "cannot read image", out=out)
    (tmp_path / "colour" / "cat").mkdir(parents=True)
    Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "colour" / "cat" / "c.png")
    bad([*m, "--input", tmp_path / "colour"], capsys, "c.png", "colour", "grayscale", out=out)
    write_folder(tmp_path / "big", 1, size=12)
    bad([*m, "--input", tmp_path / "big"], capsys, "0.png", "12x12", "8x8", out=out)
    (tmp_path / "empty").mkdir()
    bad([*m, "--input", tmp_path / "empty"], capsys, "empty", "no PNG/JPEG/DICOM", out=out)
    (tmp_path / "notes.txt").write_text("x")
    bad([*m, "--input", tmp_path / "notes.txt"], capsys, "notes.txt", "unknown input type", out=out)
    bad([*m, "--input", tmp_path / "missing"], capsys, "missing", "not found", out=out)
    bad([*m, "--input", tmp_path / "big", "--split", "test"], capsys, "--split", out=out)
    np.save(tmp_path / "x-features.npy", np.zeros((3, 4), np.float32))
    bad([*m, "--input", tmp_path / "x-features.npy"], capsys, "x-features.npy", "takes images", out=out)
    np.savez(tmp_path / "only.npz", train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.zeros(3))
    bad([*m, "--input", tmp_path / "only.npz"], capsys, "only.npz", "test_images", "--split", out=out)
    np.savez(tmp_path / "lab.npz", test_images=np.zeros((3, 8, 8), np.uint8), test_labels=np.array([0, 5, 1]))
    bad([*m, "--input", tmp_path / "lab.npz"], capsys, "lab.npz", "label 5", out=out)


def test_feature_dimension_mismatch(tmp_path, capsys):
    f = tmp_path / "feat"
    f.mkdir()
    for split in ("train", "val", "test"):
        np.save(f / f"{split}-features.npy", RNG.normal(size=(20, 6)).astype(np.float32))
        np.save(f / f"{split}-targets.npy", np.arange(20) % 2)
    fcfg = data_cfg(f, source="mescc_features")
    fmodel = export(tmp_path / "r", load_dataset(fcfg), fcfg, model_cfg("mlp"))
    np.save(tmp_path / "new-features.npy", np.zeros((4, 7), np.float32))
    bad(["--model", fmodel, "--input", tmp_path / "new-features.npy", "--output", tmp_path / "o.csv"], capsys,
        "new-features.npy", "7 columns", "trained on 6", out=tmp_path / "o.csv")
    write_folder(tmp_path / "imgs", 1)
    bad(["--model", fmodel, "--input", tmp_path / "imgs", "--output", tmp_path / "o.csv"], capsys,
        "takes feature vectors", out=tmp_path / "o.csv")


def test_missing_or_broken_model_is_one_line(tmp_path, image_model, capsys):
    model_dir, _ = image_model
    write_folder(tmp_path / "in", 1)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    bad(["--workdir", tmp_path / "run", "--input", tmp_path / "in"], capsys, "run/model", "no exported model")
    bad(["--model", tmp_path / "nowhere", "--input", tmp_path / "in"], capsys, "nowhere")
    copy = tmp_path / "copy" / "model"
    shutil.copytree(model_dir, copy)
    shutil.rmtree(copy / "arrays")
    bad(["--model", copy, "--input", tmp_path / "in"], capsys, "arrays", "copy the whole model/ folder")
    (copy.parent / "model2").mkdir()
    (copy.parent / "model2" / "model.json").write_text("{broken")
    bad(["--model", copy.parent / "model2", "--input", tmp_path / "in"], capsys, "model.json")


def test_bad_arguments_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        predict.main(["--model", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--input" in err[0]


# ----------------------------------------------------------------------------- end to end (through the loop)


def e2e_cmd(workdir: Path, data: Path, *extra: str) -> list[str]:
    return main_cmd(workdir, *TINY, "--config.train.steps=12", "--config.train.eval_every=6",
                    "--config.data.num_labels=8", "--config.data.source=image_folder",
                    f"--config.data.path={data}", *extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo CLI trained on an image folder with train/val/test sub-folders."""
    tmp = tmp_path_factory.mktemp("e2e")
    data = tmp / "data"
    write_folder(data / "train", 16, seed=1)
    write_folder(data / "val", 4, seed=2)
    write_folder(data / "test", 5, seed=3)
    p = run_cmd(e2e_cmd(tmp / "run", data))
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp, data, tmp / "run"


def test_run_writes_the_model_and_the_plots(trained):
    _, _, wd = trained
    for name in ("model/model.json", "confusion_matrix.png", "roc.png", "test_predictions.csv"):
        assert (wd / name).is_file(), name
    assert load_model(wd / "model").class_names == ["cat", "dog"]


def test_predict_on_held_out_copy_equals_the_runs_test_probabilities(trained):
    tmp, data, wd = trained
    held = tmp / "held_out"
    shutil.copytree(data / "test", held)
    p = run_cmd([*predict_cmd("--workdir", wd), "--input", str(held), "--output", str(tmp / "p.csv")])
    assert p.returncode == 0, p.stderr[-3000:]
    ids, probs, names = read_predictions(tmp / "p.csv")
    run_ids, run_probs, run_names = read_predictions(wd / "test_predictions.csv")
    assert names == run_names == ["cat", "dog"]
    run_by_id = dict(zip([i.removeprefix("test/") for i in run_ids], run_probs, strict=True))
    assert sorted(ids) == sorted(run_by_id)
    np.testing.assert_allclose(probs, np.stack([run_by_id[i] for i in ids]), rtol=1e-5, atol=1e-6)
    metrics = json.loads((tmp / "p.metrics.json").read_text())
    test = summary(wd)["test"]
    assert metrics["accuracy"] == pytest.approx(test["accuracy"])
    assert metrics["confusion_matrix"] == test["confusion_matrix"]

    shutil.rmtree(wd / "checkpoints")  # the portable model needs nothing else from the run
    p = run_cmd([*predict_cmd("--model", wd / "model"), "--input", str(held), "--output", str(tmp / "q.csv")])
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp / "q.csv").read_text() == (tmp / "p.csv").read_text()


def predict_cmd(flag: str, where: Path) -> list[str]:
    import sys
    return [sys.executable, "-m", "boostmis_jax.predict", flag, str(where)]


def test_dicom_folder_trains_and_predicts_through_the_cli(tmp_path):
    pytest.importorskip("pydicom")
    from test_dicom import write_dcm

    data = tmp_path / "dicom"
    for p in range(12):  # 12 patients, 3 images each; class = patient parity
        for n in range(3):
            arr = pattern(p % 2, 10, p * 10 + n).astype(np.uint16) * 16  # 12-bit
            write_dcm(data / sorted(CLASSES)[p % 2] / f"pt{p}" / f"{n}.dcm", arr, bits=12, patient=f"PAT{p}",
                      RescaleSlope=1, RescaleIntercept=0)
    wd = tmp_path / "run"
    p = run_cmd(e2e_cmd(wd, data, "--config.data.source=dicom_folder", "--config.data.group_by=patient",
                        "--config.data.image_size=8", "--config.data.val_fraction=0.2",
                        "--config.data.test_fraction=0.2"))
    assert p.returncode == 0, p.stderr[-3000:]
    new = tmp_path / "new_scans"
    for n in range(3):
        write_dcm(new / "PAT77" / f"{n}.dcm", pattern(n % 2, 10, 700 + n).astype(np.uint16) * 16, bits=12,
                  patient="PAT77")
    p = run_cmd([*predict_cmd("--workdir", wd), "--input", str(new), "--output", str(tmp_path / "d.csv")])
    assert p.returncode == 0, p.stderr[-3000:]
    ids, probs, _ = read_predictions(tmp_path / "d.csv")
    assert ids == ["PAT77/0.dcm", "PAT77/1.dcm", "PAT77/2.dcm"] and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    bad_file = new / "PAT77" / "3.dcm"
    bad_file.write_bytes(b"\0" * 10)
    p = run_cmd([*predict_cmd("--workdir", wd), "--input", str(new), "--output", str(tmp_path / "e.csv")])
    assert "3.dcm" in error_line(p) and not (tmp_path / "e.csv").exists()


def readme_predict_commands() -> list[list[str]]:
    """The documented predict examples (README.md and docs/prediction.md), exactly as written (relative
    paths)."""
    import shlex

    from helpers import ROOT
    text = "\n".join((ROOT / f).read_text(encoding="utf-8") for f in ("README.md", "docs/prediction.md"))
    cmds = [shlex.split(ln) for ln in text.splitlines() if ln.startswith("python -m boostmis_jax.predict ")]
    assert len(cmds) >= 2, "the documented predict examples moved: update this test"
    return cmds


def test_readme_predict_examples_run_as_written(tmp_path):
    """cwd = a folder holding runs/demo (a model exported as a run would), new_scans/ and
    pneumoniamnist.npz; each README command runs unchanged (relative paths reach orbax)."""
    import subprocess
    import sys

    from helpers import env
    x = np.stack([np.kron(pattern(i % 2, 7, i), np.ones((4, 4), np.uint8)) for i in range(24)])  # 28x28
    y = (np.arange(24) % 2)[:, None]
    np.savez(tmp_path / "pneumoniamnist.npz", train_images=x[:16], train_labels=y[:16], val_images=x[16:20],
             val_labels=y[16:20], test_images=x[20:], test_labels=y[20:])
    dcfg = data_cfg(tmp_path / "pneumoniamnist.npz", source="medmnist_npz")
    save = export(tmp_path / "tmp", load_dataset(dcfg), dcfg)
    (tmp_path / "runs").mkdir()
    shutil.move(str(save.parent), tmp_path / "runs" / "demo")
    (tmp_path / "new_scans").mkdir()
    for i in range(3):
        Image.fromarray(x[i]).save(tmp_path / "new_scans" / f"{i}.png")
    for cmd in readme_predict_commands():
        assert cmd[:3] == ["python", "-m", "boostmis_jax.predict"]
        p = subprocess.run([sys.executable, *cmd[1:]], cwd=tmp_path, env=env(1), capture_output=True,
                           text=True, timeout=300, check=False)
        assert p.returncode == 0, (cmd, p.stderr[-2000:])
        assert "Traceback" not in p.stderr
    assert len(read_predictions(tmp_path / "new_scans.csv")[0]) == 3
    assert (tmp_path / "pneumoniamnist_test.predictions.csv").is_file()


@pytest.mark.parametrize("field,value,says", [
    (("format_version",), "1", "format_version"), (("data", "input_shape"), [0, 8, 1], "input_shape"),
    (("data", "input_shape"), [8, 8], "input_shape"), (("class_names",), [], "class_names"),
    (("class_names",), ["a", "a"], "distinct"), (("data", "std"), [0.0], "data.std"),
    (("data", "std"), [0.2, 0.3], "data.std"), (("data", "mean"), "abc", "data.mean"),
    (("data", "kind"), "video", "data.kind"), (("model", "widths"), [0], "does not build"),
    (("model", "widths"), [8, 8], "do not match"), (("model",), None, "model"),
    (("model", "name"), "nope", "model.name")])
def test_hand_edited_model_json_is_one_line(tmp_path, image_model, capsys, field, value, says):
    """Every field predict relies on is checked: a bad edit is one line naming the field, never a traceback
    or garbage predictions with exit 0."""
    src, _ = image_model
    model_dir = tmp_path / "model"
    shutil.copytree(src, model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    node = meta
    for k in field[:-1]:
        node = node[k]
    node[field[-1]] = value
    (model_dir / "model.json").write_text(json.dumps(meta))
    img = tmp_path / "in"
    write_folder(img, 1)
    rc, _, err = call(["--model", model_dir, "--input", img, "--output", tmp_path / "p.csv"], capsys)
    assert rc == 2, err
    assert says in err and "model.json" in err or "arrays" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "p.csv").exists()


def test_batch_size_and_output_neighbours(tmp_path, image_model, capsys):
    """--batch-size 0 is refused; a huge one is capped at the inputs (no 93 GiB padding); an output that is
    a FIFO is named as one and left alone."""
    import os
    model_dir, _ = image_model
    img = tmp_path / "in"
    write_folder(img, 2)
    rc, _, err = call(["--model", model_dir, "--input", img, "--batch-size", "0"], capsys)
    assert rc == 2 and "--batch-size 0" in err
    rc, _, err = call(["--model", model_dir, "--input", img, "--batch-size", "100000000000", "--output",
                       tmp_path / "p.csv"], capsys)
    assert rc == 0, err
    os.mkfifo(tmp_path / "fifo.csv")
    rc, _, err = call(["--model", model_dir, "--input", img, "--output", tmp_path / "fifo.csv"], capsys)
    assert rc == 2 and "is a FIFO" in err and (tmp_path / "fifo.csv").exists()
