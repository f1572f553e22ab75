"""Data sources, validation, labeled splits: round trips of each accepted format, one test per bad input."""
from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from boostmis_jax.data import (
    SOURCES,
    Dataset,
    ensure_split,
    labeled_split,
    load_dataset,
    load_split_file,
    register_source,
    save_split,
)
from boostmis_jax.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_cfg(source: str, path: object = "", **kw) -> ml_collections.ConfigDict:
    base = {"source": source, "path": str(path), "num_labels": 4, "split_file": "", "val_fraction": 0.1,
            "test_fraction": 0.2, "image_size": 0, "num_classes": 0}
    base.update(kw)
    return ml_collections.ConfigDict(base)


def user_error(fn, *names: str) -> str:
    """Run fn, require a one-line UserError that mentions every given name; return the message."""
    with pytest.raises(UserError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for name in names:
        assert name in msg, (name, msg)
    return msg


def labels(n: int, k: int, seed: int = 0) -> np.ndarray:
    """n labels covering all k classes."""
    y = np.arange(n) % k
    return np.random.default_rng(seed).permutation(y)


def write_npz(path: Path, shape=(40, 6, 5), label_shape="n1", k=2, splits=("train", "val", "test"), **extra):
    rng = np.random.default_rng(1)
    arrays = {}
    for i, s in enumerate(splits):
        n = shape[0] - 10 * i
        arrays[f"{s}_images"] = rng.integers(0, 256, (n, *shape[1:]), dtype=np.uint8)
        y = labels(n, k, i).astype(np.uint8)
        arrays[f"{s}_labels"] = y[:, None] if label_shape == "n1" else y
    arrays.update(extra)
    np.savez(path, **arrays)
    return arrays


# ---------------------------------------------------------------------------------------------------- npz


def test_npz_gray_n1_labels(tmp_path):
    path = tmp_path / "gray.npz"
    arrays = write_npz(path)
    ds = load_dataset(make_cfg("medmnist_npz", path))
    assert isinstance(ds, Dataset) and ds.kind == "image" and ds.name == "gray"
    assert ds.train_x.shape == (40, 6, 5, 1) and ds.train_x.dtype == np.uint8
    assert ds.val_x.shape == (30, 6, 5, 1) and ds.test_x.shape == (20, 6, 5, 1)
    assert ds.train_y.dtype == np.int32 and ds.train_y.shape == (40,)
    np.testing.assert_array_equal(ds.train_y, arrays["train_labels"][:, 0])
    np.testing.assert_array_equal(ds.train_x[..., 0], arrays["train_images"])
    assert ds.num_classes == 2 and ds.class_names == ["0", "1"]
    assert ds.train_ids == [str(i) for i in range(40)]
    assert ds.mean.shape == (1,) and ds.mean.dtype == np.float32
    np.testing.assert_allclose(ds.mean, [arrays["train_images"].mean() / 255], rtol=1e-5)
    np.testing.assert_allclose(ds.std, [(arrays["train_images"] / 255).std()], rtol=1e-4)


def test_npz_rgb_flat_labels(tmp_path):
    path = tmp_path / "rgb.npz"
    arrays = write_npz(path, shape=(40, 4, 4, 3), label_shape="n", k=3)
    ds = load_dataset(make_cfg("medmnist_npz", path))
    assert ds.train_x.shape == (40, 4, 4, 3) and ds.mean.shape == (3,) and ds.std.shape == (3,)
    assert ds.num_classes == 3
    np.testing.assert_array_equal(ds.test_y, arrays["test_labels"])
    np.testing.assert_allclose(ds.mean, (arrays["train_images"] / 255).mean(axis=(0, 1, 2)), rtol=1e-5)


def test_npz_train_only_carves_val_test_stratified_with_fixed_seed(tmp_path):
    path = tmp_path / "train_only.npz"
    arrays = write_npz(path, shape=(100, 3, 3), splits=("train",))
    cfg = make_cfg("medmnist_npz", path)
    ds = load_dataset(cfg)
    assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (70, 10, 20)
    for y in (ds.train_y, ds.val_y, ds.test_y):
        assert np.bincount(y, minlength=2).tolist() == [len(y) // 2] * 2  # 50/50 source stays 50/50
    rows = np.array([int(i) for i in ds.train_ids])
    np.testing.assert_array_equal(ds.train_x[..., 0], arrays["train_images"][rows])
    np.testing.assert_array_equal(ds.train_y, arrays["train_labels"][rows, 0])
    again = load_dataset(cfg)
    assert again.train_ids == ds.train_ids  # carving seed is fixed (0), not the experiment seed


def test_npz_float_images_in_range_are_converted(tmp_path):
    path = tmp_path / "float.npz"
    x = np.random.default_rng(0).integers(0, 256, (20, 4, 4)).astype(np.float64)
    np.savez(path, train_images=x, train_labels=labels(20, 2))
    ds = load_dataset(make_cfg("medmnist_npz", path))
    assert ds.train_x.dtype == np.uint8
    rows = np.array([int(i) for i in ds.train_ids])
    np.testing.assert_array_equal(ds.train_x[..., 0], x[rows].astype(np.uint8))


def test_npz_float_images_in_unit_range_rejected(tmp_path):
    path = tmp_path / "unit.npz"
    np.savez(path, train_images=np.random.default_rng(0).random((20, 4, 4)), train_labels=labels(20, 2))
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "unit.npz", "255")


def test_npz_int_images_out_of_range_rejected(tmp_path):
    path = tmp_path / "wide.npz"
    np.savez(path, train_images=np.full((20, 4, 4), 300, np.int32), train_labels=labels(20, 2))
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "wide.npz", "300")


def test_npz_nan_images_rejected(tmp_path):
    path = tmp_path / "nanimg.npz"
    x = np.full((20, 4, 4), 10.0)
    x[3, 1, 1] = np.nan
    np.savez(path, train_images=x, train_labels=labels(20, 2))
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "nanimg.npz", "1 NaN/inf")


def test_npz_multilabel_rejected(tmp_path):
    path = tmp_path / "multi.npz"
    np.savez(path, train_images=np.zeros((10, 4, 4), np.uint8), train_labels=np.zeros((10, 14), np.uint8))
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "multi.npz", "multi-label")


def test_npz_bad_channel_count_rejected(tmp_path):
    path = tmp_path / "vol.npz"
    np.savez(path, train_images=np.zeros((10, 4, 4, 4), np.uint8), train_labels=labels(10, 2))
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "vol.npz", "(10, 4, 4, 4)")


def test_npz_image_size_resizes(tmp_path):
    path = tmp_path / "small.npz"
    write_npz(path, shape=(40, 6, 6))
    ds = load_dataset(make_cfg("medmnist_npz", path, image_size=12))
    assert ds.train_x.shape == (40, 12, 12, 1) and ds.test_x.shape == (20, 12, 12, 1)


# ------------------------------------------------------------------------------------------------ mescc


def write_mescc(folder: Path, k: int, splits=("train", "val", "test"), d: int = 5) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(k)
    out = {}
    for i, s in enumerate(splits):
        n = 60 - 15 * i
        x = rng.normal(3.0, 2.0, (n, d))
        y = labels(n, k, i)
        np.save(folder / f"{s}-features.npy", x)
        np.save(folder / f"{s}-targets.npy", y)
        out[s] = (x, y)
    return out


def test_mescc_two_classes_standardized_with_train_stats(tmp_path):
    raw = write_mescc(tmp_path / "mescc2", 2)
    ds = load_dataset(make_cfg("mescc_features", tmp_path / "mescc2"))
    assert ds.kind == "features" and ds.num_classes == 2
    assert ds.train_x.shape == (60, 5) and ds.train_x.dtype == np.float32 and ds.val_x.shape == (45, 5)
    np.testing.assert_allclose(ds.train_x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.train_x.std(0), 1, atol=1e-4)
    x_tr, x_val = raw["train"][0], raw["val"][0]
    np.testing.assert_allclose(ds.val_x, (x_val - x_tr.mean(0)) / x_tr.std(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ds.test_y, raw["test"][1])
    np.testing.assert_array_equal(ds.mean, np.zeros(5)) and np.testing.assert_array_equal(ds.std, np.ones(5))
    assert ds.train_ids == [str(i) for i in range(60)]


def test_mescc_six_classes_without_val_carves_val(tmp_path):
    write_mescc(tmp_path / "m6", 6, splits=("train", "test"))
    ds = load_dataset(make_cfg("mescc_features", tmp_path / "m6", val_fraction=0.2))
    assert ds.num_classes == 6 and len(ds.test_y) == 45
    assert len(ds.val_y) == 12 and len(ds.train_y) == 48
    assert set(np.unique(ds.val_y)) == set(range(6)) and set(np.unique(ds.train_y)) == set(range(6))
    assert len(set(ds.train_ids)) == 48 and all(0 <= int(i) < 60 for i in ds.train_ids)


def test_mescc_nan_features_rejected(tmp_path):
    write_mescc(tmp_path / "m", 2)
    x = np.load(tmp_path / "m" / "val-features.npy")
    x[2, 1] = np.nan
    x[4, 0] = np.inf
    np.save(tmp_path / "m" / "val-features.npy", x)
    user_error(lambda: load_dataset(make_cfg("mescc_features", tmp_path / "m")),
               "val-features.npy", "2 NaN/inf")


def test_mescc_missing_targets_file_rejected(tmp_path):
    write_mescc(tmp_path / "m", 2)
    (tmp_path / "m" / "test-targets.npy").unlink()
    user_error(lambda: load_dataset(make_cfg("mescc_features", tmp_path / "m")),
               "test-targets.npy", "not found")


def test_mescc_feature_dim_mismatch_rejected(tmp_path):
    write_mescc(tmp_path / "m", 2)
    np.save(tmp_path / "m" / "test-features.npy", np.zeros((30, 4)))
    user_error(lambda: load_dataset(make_cfg("mescc_features", tmp_path / "m")), "test-features.npy", "(4,)")


# ----------------------------------------------------------------------------------------- image folder


def save_img(path: Path, size=(6, 5), mode="L", value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    arr = ((np.arange(np.prod(shape)).reshape(shape) * 7 + value) % 256).astype(np.uint8)
    Image.fromarray(arr, mode=mode).save(path, quality=95)


def make_flat_folder(root: Path, mode="L", per_class=10):
    for c, cls in enumerate(["normal", "abnormal"]):
        for i in range(per_class):
            ext = ".png" if i % 2 == 0 else (".jpg" if i % 4 == 1 else ".JPEG")
            save_img(root / cls / f"img{i}{ext}", mode=mode, value=c * 50 + i)
    (root / "notes.txt").write_text("ignored")


def test_image_folder_flat_gray_png_and_jpeg(tmp_path):
    root = tmp_path / "xray"
    make_flat_folder(root)
    ds = load_dataset(make_cfg("image_folder", root))
    assert ds.name == "xray" and ds.class_names == ["abnormal", "normal"]  # sorted folder names
    assert ds.train_x.shape[1:] == (5, 6, 1) and ds.train_x.dtype == np.uint8
    assert len(ds.train_y) + len(ds.val_y) + len(ds.test_y) == 20
    assert (len(ds.val_y), len(ds.test_y)) == (2, 4)
    for rel, y in zip(ds.train_ids, ds.train_y, strict=True):
        assert (root / rel).is_file() and rel.split("/")[0] == ds.class_names[y]
    first = ds.train_ids[0]
    np.testing.assert_array_equal(ds.train_x[0, ..., 0], np.asarray(Image.open(root / first).convert("L")))
    assert {Path(r).suffix.lower() for r in ds.train_ids} >= {".png", ".jpg"}


def test_image_folder_rgb_when_any_image_is_color(tmp_path):
    root = tmp_path / "mixed"
    make_flat_folder(root)
    save_img(root / "normal" / "color.png", mode="RGB")
    ds = load_dataset(make_cfg("image_folder", root))
    assert ds.train_x.shape[-1] == 3 and ds.mean.shape == (3,)


def test_image_folder_split_layout_and_resize(tmp_path):
    root = tmp_path / "ds"
    for split, n in [("train", 6), ("val", 2), ("test", 3)]:
        for cls in ["b", "a", "c"]:
            for i in range(n):
                save_img(root / split / cls / f"{i}.png", size=(8 + i, 7), mode="RGB")
    ds = load_dataset(make_cfg("image_folder", root, image_size=4))
    assert ds.class_names == ["a", "b", "c"] and ds.num_classes == 3
    assert ds.train_x.shape == (18, 4, 4, 3)
    assert ds.val_x.shape == (6, 4, 4, 3) and ds.test_x.shape == (9, 4, 4, 3)
    assert ds.train_ids[0] == "train/a/0.png"
    np.testing.assert_array_equal(np.bincount(ds.test_y), [3, 3, 3])


def test_image_folder_16bit_png_scaled_not_clipped(tmp_path):
    root = tmp_path / "ct"
    for cls in ["x", "y"]:
        for i in range(5):
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4), 257 * (10 * i + 1), np.uint16)).save(root / cls / f"{i}.png")
    ds = load_dataset(make_cfg("image_folder", root, val_fraction=0.0, test_fraction=0.0))
    values = sorted({int(v) for v in np.unique(ds.train_x)})
    assert values == [1, 11, 21, 31, 41]


def test_image_folder_unequal_sizes_rejected(tmp_path):
    root = tmp_path / "sizes"
    make_flat_folder(root)
    save_img(root / "normal" / "big.png", size=(9, 9))
    user_error(lambda: load_dataset(make_cfg("image_folder", root)), "normal/big.png", "image_size")


def test_image_folder_corrupt_image_rejected(tmp_path):
    root = tmp_path / "broken"
    make_flat_folder(root)
    (root / "abnormal" / "bad.png").write_bytes(b"not an image at all")
    user_error(lambda: load_dataset(make_cfg("image_folder", root)), "abnormal/bad.png")


def test_image_folder_too_many_classes_for_num_classes(tmp_path):
    root = tmp_path / "three"
    make_flat_folder(root)
    for i in range(3):
        save_img(root / "zzz" / f"{i}.png")
    user_error(lambda: load_dataset(make_cfg("image_folder", root, num_classes=2)),
               "three/zzz", "num_classes=3")


# ---------------------------------------------------------------------------------------------- sklearn


def test_sklearn_digits():
    ds = load_dataset(make_cfg("sklearn_digits"))
    assert ds.train_x.shape[1:] == (8, 8, 1) and ds.train_x.dtype == np.uint8 and ds.num_classes == 10
    assert ds.train_x.max() == 255 and ds.train_x.min() == 0
    assert len(ds.train_y) + len(ds.val_y) + len(ds.test_y) == 1797
    assert len(ds.test_y) == round(0.2 * 1797) and len(ds.val_y) == round(0.1 * 1797)
    assert set(np.unique(ds.val_y)) == set(range(10))


def test_sklearn_digits_read_directly_equal_load_digits_and_skip_the_sklearn_import():
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from boostmis_jax.data.sklearn_sets import _digits
    images, target = _digits()
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(target, bunch.target)
    code = ("import sys; from boostmis_jax.data.sklearn_sets import _digits; _digits(); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_sklearn_digits_fall_back_to_load_digits_when_a_release_moves_the_file(tmp_path, monkeypatch):
    import types

    from sklearn.datasets import load_digits

    from boostmis_jax.data import sklearn_sets

    moved = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])  # no datasets/data/ here
    # only this module's view of importlib: the process's own find_spec stays as it is
    monkeypatch.setattr(sklearn_sets, "importlib",
                        types.SimpleNamespace(util=types.SimpleNamespace(find_spec=lambda name: moved)))
    images, target = sklearn_sets._digits()
    np.testing.assert_array_equal(images, load_digits().images)
    np.testing.assert_array_equal(target, load_digits().target)


def test_sklearn_breast_cancer():
    ds = load_dataset(make_cfg("sklearn_breast_cancer"))
    assert ds.kind == "features" and ds.train_x.shape[1] == 30 and ds.num_classes == 2
    assert ds.class_names == ["malignant", "benign"]
    np.testing.assert_allclose(ds.train_x.mean(0), 0, atol=1e-4)
    assert abs(float(ds.test_x.mean())) < 0.5  # train stats applied, not test's own (which would give 0)


def test_sklearn_num_classes_too_small_rejected():
    user_error(lambda: load_dataset(make_cfg("sklearn_digits", num_classes=2)),
               "sklearn digits", "num_classes=2")


# -------------------------------------------------------------------------------------------- bad input


def test_unknown_source():
    user_error(lambda: load_dataset(make_cfg("nope")), "data.source", "medmnist_npz")


def test_register_source_adds_to_registry(tmp_path):
    @register_source("test_tiny")
    def tiny(cfg):
        return SOURCES["medmnist_npz"](cfg)

    try:
        write_npz(tmp_path / "t.npz")
        assert load_dataset(make_cfg("test_tiny", tmp_path / "t.npz")).name == "t"
    finally:
        SOURCES.pop("test_tiny")


def test_missing_file(tmp_path):
    msg = user_error(lambda: load_dataset(make_cfg("medmnist_npz", tmp_path / "absent.npz")),
                     "absent.npz")
    assert "file not found" in msg and "--config.data.path=" in msg


def test_corrupt_npz(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(np.random.default_rng(0).bytes(500))
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "corrupt.npz")


def test_truncated_npz(tmp_path):
    path = tmp_path / "trunc.npz"
    write_npz(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "trunc.npz")


def test_npy_given_as_npz(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros((3, 4, 4), np.uint8))
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "single.npz", "numpy.savez")


def test_pickled_npy_rejected(tmp_path):
    write_mescc(tmp_path / "m", 2)
    np.save(tmp_path / "m" / "train-targets.npy", np.array([{"a": 1}] * 60, dtype=object), allow_pickle=True)
    msg = user_error(lambda: load_dataset(make_cfg("mescc_features", tmp_path / "m")), "train-targets.npy")
    assert "allow_pickle" not in msg


def test_missing_key(tmp_path):
    path = tmp_path / "nokey.npz"
    np.savez(path, train_images=np.zeros((10, 4, 4), np.uint8), labels=labels(10, 2))
    msg = user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "nokey.npz", "'train_labels'")
    assert "labels" in msg.split("found:")[1]


def test_missing_val_labels_when_val_images_present(tmp_path):
    path = tmp_path / "halfval.npz"
    np.savez(path, train_images=np.zeros((10, 4, 4), np.uint8), train_labels=labels(10, 2),
             val_images=np.zeros((3, 4, 4), np.uint8))
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "halfval.npz", "'val_labels'")


def test_wrong_label_count(tmp_path):
    path = tmp_path / "count.npz"
    np.savez(path, train_images=np.zeros((10, 4, 4), np.uint8), train_labels=labels(9, 2))
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "count.npz", "9 labels", "10 rows")


def test_label_out_of_range_for_num_classes(tmp_path):
    path = tmp_path / "range.npz"
    y = labels(20, 2)
    y[4] = 9
    np.savez(path, train_images=np.zeros((20, 4, 4), np.uint8), train_labels=y)
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path, num_classes=2)),
               "range.npz", "label 9", "row 4", "num_classes=2")
    # inferred as 10 classes when not given: 2..8 have no sample, which is an error naming them
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "range.npz", "classes 2, 3, 4, 5, 6, 7, 8")


def test_negative_label(tmp_path):
    write_mescc(tmp_path / "neg", 2)
    y = np.load(tmp_path / "neg" / "train-targets.npy")
    y[7] = -1
    np.save(tmp_path / "neg" / "train-targets.npy", y)
    user_error(lambda: load_dataset(make_cfg("mescc_features", tmp_path / "neg")),
               "train-targets.npy", "-1", "row 7")


def test_fractional_label(tmp_path):
    path = tmp_path / "frac.npz"
    y = labels(10, 2).astype(np.float32)
    y[3] = 0.5
    np.savez(path, train_images=np.zeros((10, 4, 4), np.uint8), train_labels=y)
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "frac.npz", "row 3")


def test_single_class_train_rejected(tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, train_images=np.zeros((10, 4, 4), np.uint8), train_labels=np.zeros(10, np.int64))
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "one.npz", "at least 2")


def test_bad_fraction_rejected(tmp_path):
    path = tmp_path / "f.npz"
    write_npz(path, splits=("train",))
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path, val_fraction=1.5)), "data.val_fraction")


# ---------------------------------------------------------------------------------------------- splits


def test_labeled_split_stratified_proportional():
    y = np.array([0] * 70 + [1] * 25 + [2] * 5)
    idx = labeled_split(y, 20, seed=0)
    assert idx.dtype == np.int64 and len(idx) == 20 and np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx]).tolist() == [14, 5, 1]
    rare = labeled_split(np.array([0] * 98 + [1] * 2), 5, seed=3)
    assert np.bincount(np.array([0] * 98 + [1] * 2)[rare]).tolist() == [4, 1]  # at least one per class


def test_labeled_split_seeded():
    y = labels(200, 4)
    a, b, c = labeled_split(y, 20, 1), labeled_split(y, 20, 1), labeled_split(y, 20, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(y[c]) == {0, 1, 2, 3}


def test_labeled_split_bad_sizes():
    y = labels(10, 3)
    user_error(lambda: labeled_split(y, 11, 0), "data.num_labels")
    user_error(lambda: labeled_split(y, 2, 0), "data.num_labels")


@pytest.mark.parametrize("fmt", ["json", "npy", "txt"])
def test_split_file_formats_round_trip(tmp_path, fmt):
    y = labels(30, 3)
    want = np.array([2, 5, 11, 29])
    path = tmp_path / f"split.{fmt}"
    if fmt == "json":
        save_split(path, want[::-1], y)
        record = json.loads(path.read_text())
        assert record["labeled"] == want.tolist() and record["num_train"] == 30 and record["checksum"]
    elif fmt == "npy":
        np.save(path, want[::-1])
    else:
        path.write_text("# labeled rows\n29\n5\n\n2\n11\n")
    got = load_split_file(path, 30)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name,content", [
    ("range.txt", "1\n30\n"),
    ("dup.txt", "1\n4\n1\n"),
    ("empty.txt", "\n"),
    ("word.txt", "1\nfive\n"),
    ("garbage.json", "{not json"),
    ("nolist.json", '{"rows": [1]}'),
    ("size.json", '{"labeled": [1], "num_train": 99}'),
    ("float.npy", None),
    ("split.csv", "1,2"),
])
def test_bad_split_file(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        np.save(path, np.array([1.5, 2.0]))
    else:
        path.write_text(content)
    user_error(lambda: load_split_file(path, 30), name)


def test_split_file_not_found(tmp_path):
    user_error(lambda: load_split_file(tmp_path / "nothere.json", 30), "nothere.json")


def test_ensure_split_creates_then_resumes(tmp_path):
    write_npz(tmp_path / "d.npz", shape=(60, 4, 4), k=3)
    cfg = make_cfg("medmnist_npz", tmp_path / "d.npz", num_labels=9)
    ds = load_dataset(cfg)
    work = tmp_path / "run"
    first = ensure_split(work, cfg, ds.train_y, seed=0)
    assert len(first) == 9 and set(ds.train_y[first]) == {0, 1, 2}
    assert (work / "split.json").is_file() and sorted(p.name for p in work.iterdir()) == ["split.json"]
    resumed = ensure_split(work, cfg, ds.train_y, seed=123)  # another seed would pick other rows: resume must win
    np.testing.assert_array_equal(first, resumed)
    assert not np.array_equal(first, labeled_split(ds.train_y, 9, 123))


def test_ensure_split_uses_split_file_and_rejects_conflict(tmp_path):
    write_npz(tmp_path / "d.npz", shape=(60, 4, 4))
    (tmp_path / "mine.txt").write_text("0\n1\n2\n3\n")
    cfg = make_cfg("medmnist_npz", tmp_path / "d.npz", split_file=str(tmp_path / "mine.txt"))
    ds = load_dataset(cfg)
    got = ensure_split(tmp_path / "run", cfg, ds.train_y, seed=0)
    np.testing.assert_array_equal(got, [0, 1, 2, 3])
    np.testing.assert_array_equal(load_split_file(tmp_path / "run" / "split.json", 60), [0, 1, 2, 3])
    np.testing.assert_array_equal(ensure_split(tmp_path / "run", cfg, ds.train_y, seed=0), [0, 1, 2, 3])
    (tmp_path / "other.txt").write_text("5\n6\n")
    cfg.split_file = str(tmp_path / "other.txt")
    user_error(lambda: ensure_split(tmp_path / "run", cfg, ds.train_y, seed=0), "split.json", "other.txt")


def test_ensure_split_rejects_split_of_other_dataset(tmp_path):
    write_npz(tmp_path / "d.npz", shape=(60, 4, 4))
    cfg = make_cfg("medmnist_npz", tmp_path / "d.npz")
    ds = load_dataset(cfg)
    save_split(tmp_path / "run" / "split.json", [0, 1, 2], np.zeros(len(ds.train_y), np.int32))
    user_error(lambda: ensure_split(tmp_path / "run", cfg, ds.train_y, seed=0), "split.json", "checksum")


# ----------------------------------------------------------------------------------------------- real


@pytest.mark.skipif(not (SHARED / "pneumoniamnist.npz").exists(), reason="shared PneumoniaMNIST not present")
def test_pneumoniamnist(tmp_path):
    cfg = make_cfg("medmnist_npz", SHARED / "pneumoniamnist.npz", num_labels=50, num_classes=2)
    ds = load_dataset(cfg)
    assert ds.train_x.shape == (4708, 28, 28, 1) and ds.num_classes == 2
    assert (len(ds.val_y), len(ds.test_y)) == (524, 624)
    assert np.bincount(ds.train_y).tolist() == [1214, 3494]
    idx = ensure_split(tmp_path, cfg, ds.train_y, seed=0)
    assert len(idx) == 50 and np.bincount(ds.train_y[idx]).tolist() == [13, 37]


def test_saved_split_that_disagrees_with_num_labels_is_an_error(tmp_path):
    import ml_collections

    from boostmis_jax.data import ensure_split, load_dataset
    from boostmis_jax.errors import UserError
    cfg = ml_collections.ConfigDict({"source": "sklearn_digits", "path": "", "num_labels": 20, "split_file": "",
                                     "val_fraction": 0.1, "test_fraction": 0.2, "image_size": 0, "num_classes": 0})
    ds = load_dataset(cfg)
    first = ensure_split(tmp_path, cfg, ds.train_y, 0)
    assert len(first) == 20
    assert ensure_split(tmp_path, cfg, ds.train_y, 0).tolist() == first.tolist()  # resume
    cfg.num_labels = 30
    with pytest.raises(UserError, match="num_labels=30"):
        ensure_split(tmp_path, cfg, ds.train_y, 0)


# ------------------------------------------------------------------------------------ label balance


def test_labeled_split_balanced_equal_per_class():
    y = np.array([0] * 70 + [1] * 25 + [2] * 5)
    idx = labeled_split(y, 12, seed=0, balance="balanced")
    assert np.bincount(y[idx]).tolist() == [4, 4, 4]
    assert np.bincount(y[labeled_split(y, 12, seed=0)]).tolist() == [8, 3, 1]  # stratified: proportional


def test_labeled_split_balanced_small_class_taken_whole(capsys):
    y = np.array([0] * 70 + [1] * 25 + [2] * 5)
    idx = labeled_split(y, 30, seed=0, balance="balanced")
    assert np.bincount(y[idx]).tolist() == [13, 12, 5]
    assert "class 2 has 5" in capsys.readouterr().err


def test_ensure_split_reads_label_balance(tmp_path):
    write_npz(tmp_path / "d.npz", shape=(60, 4, 4), k=3)
    cfg = make_cfg("medmnist_npz", tmp_path / "d.npz", num_labels=9, label_balance="balanced")
    ds = load_dataset(cfg)
    idx = ensure_split(tmp_path / "run", cfg, ds.train_y, seed=0)
    assert np.bincount(ds.train_y[idx]).tolist() == [3, 3, 3]
    cfg.label_balance = "equal"
    user_error(lambda: ensure_split(tmp_path / "run2", cfg, ds.train_y, seed=0), "data.label_balance", "equal")


# ------------------------------------------------------------------------------------ patient groups


def write_patients_npz(path: Path, patients: int = 20, per: int = 3) -> np.ndarray:
    """Train-only npz whose rows come in runs of `per` images per patient; patients.csv beside it."""
    y = np.repeat(np.arange(patients) % 2, per)
    x = np.random.default_rng(0).integers(0, 256, (len(y), 4, 4), dtype=np.uint8)
    np.savez(path, train_images=x, train_labels=y)
    rows = ["id,patient"] + [f"{i},P{i // per}" for i in range(len(y))]
    (path.parent / "patients.csv").write_text("\n".join(rows) + "\n")
    return y


def test_patient_carve_and_labeled_draw_keep_patients_whole(tmp_path):
    write_patients_npz(tmp_path / "p.npz")
    cfg = make_cfg("medmnist_npz", tmp_path / "p.npz", group_by="patient", num_labels=12)
    ds = load_dataset(cfg)
    patient = {str(i): f"P{i // 3}" for i in range(60)}
    sides = [{patient[i] for i in ids} for ids in (ds.train_ids, ds.val_ids, ds.test_ids)]
    assert all(sides) and not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert ds.train_groups == [patient[i] for i in ds.train_ids]
    idx = ensure_split(tmp_path / "run", cfg, ds.train_y, seed=0, groups=ds.train_groups)
    labeled = {ds.train_groups[i] for i in idx}
    unlabeled = {g for i, g in enumerate(ds.train_groups) if i not in set(idx.tolist())}
    assert labeled and not (labeled & unlabeled) and set(ds.train_y[idx]) == {0, 1}
    assert len(idx) <= 12 + 3
    resumed = ensure_split(tmp_path / "run", cfg, ds.train_y, seed=5, groups=ds.train_groups)
    np.testing.assert_array_equal(idx, resumed)  # the requested size, not the row count, is compared


def test_without_group_by_patients_are_ignored(tmp_path):
    write_patients_npz(tmp_path / "p.npz")
    ds = load_dataset(make_cfg("medmnist_npz", tmp_path / "p.npz"))
    assert ds.train_groups is None


def test_patients_csv_missing_an_id(tmp_path):
    write_patients_npz(tmp_path / "p.npz")
    csv = tmp_path / "patients.csv"
    csv.write_text("\n".join(csv.read_text().splitlines()[:-1]) + "\n")
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", tmp_path / "p.npz", group_by="patient")),
               "patients.csv", "'59'")


@pytest.mark.parametrize("text,names", [("name,who\n0,a\n", ["id,patient"]),
                                        ("id,patient\n0,a\n0,b\n", ["line 3", "'0'"]),
                                        ("id,patient\n0,\n", ["line 2"])])
def test_bad_patients_csv(tmp_path, text, names):
    write_patients_npz(tmp_path / "p.npz")
    (tmp_path / "patients.csv").write_text(text)
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", tmp_path / "p.npz", group_by="patient")),
               "patients.csv", *names)


def test_group_by_without_patient_information(tmp_path):
    write_npz(tmp_path / "d.npz")
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", tmp_path / "d.npz", group_by="patient")),
               "data.group_by=patient", "patients.csv")
    user_error(lambda: load_dataset(make_cfg("sklearn_digits", group_by="patient")), "data.group_by")
    user_error(lambda: load_dataset(make_cfg("sklearn_digits", group_by="study")), "data.group_by", "study")


def test_patient_in_shipped_train_and_test_is_an_error(tmp_path):
    root = tmp_path / "split"
    for s in ("train", "test"):
        for c in ("a", "b"):
            for i in range(3):
                save_img(root / s / c / f"{i}.png", value=i)
    rows = ["id,patient"] + [f"{s}/{c}/{i}.png,{s}{c}{i}" for s in ("train", "test") for c in "ab"
                             for i in range(3)]
    rows[-1] = "test/b/2.png,trainb2"
    (root / "patients.csv").write_text("\n".join(rows) + "\n")
    user_error(lambda: load_dataset(make_cfg("image_folder", root, group_by="patient")),
               "'trainb2'", "train/b/2.png", "test/b/2.png")


# ------------------------------------------------------------------------------------ label checks


def test_one_based_labels_are_an_error_naming_class_0(tmp_path):
    path = tmp_path / "one_based.npz"
    np.savez(path, train_images=np.zeros((20, 4, 4), np.uint8), train_labels=labels(20, 2) + 1)
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "one_based.npz", "class 0", "1-based")


def test_empty_class_with_num_classes_set_is_a_warning(tmp_path, capsys):
    path = tmp_path / "one_based.npz"
    np.savez(path, train_images=np.arange(320, dtype=np.uint8).reshape(20, 4, 4),
             train_labels=labels(20, 2) + 1)
    ds = load_dataset(make_cfg("medmnist_npz", path, num_classes=3))
    assert ds.num_classes == 3
    err = capsys.readouterr().err
    assert "warning:" in err and "class 0" in err and "\n" == err[-1] and err.count("\n") == 1


def test_class_only_in_test_is_an_error(tmp_path):
    path = tmp_path / "k.npz"
    np.savez(path, train_images=np.zeros((20, 4, 4), np.uint8), train_labels=labels(20, 2),
             val_images=np.zeros((4, 4, 4), np.uint8), val_labels=np.array([0, 1, 0, 1]),
             test_images=np.zeros((4, 4, 4), np.uint8), test_labels=np.array([0, 1, 2, 1]))
    user_error(lambda: load_dataset(make_cfg("medmnist_npz", path)), "k.npz [test_labels]", "class 2 (row 2)")


def test_relative_data_path_error_names_the_resolved_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    msg = user_error(lambda: load_dataset(make_cfg("medmnist_npz", "data/nope.npz")), "data/nope.npz")
    assert str(tmp_path / "data" / "nope.npz") in msg
    msg = user_error(lambda: load_dataset(make_cfg("image_folder", "imgs")), "imgs")
    assert str(tmp_path / "imgs") in msg


def test_features_keep_the_raw_statistics_for_prediction(tmp_path):
    arrays = write_mescc(tmp_path / "m", 2)
    ds = load_dataset(make_cfg("mescc_features", tmp_path / "m"))
    x = arrays["train"][0].astype(np.float32)  # check_features reads features as float32
    np.testing.assert_array_equal(ds.feature_mean, x.mean(0, dtype=np.float64))
    np.testing.assert_array_equal(((x - ds.feature_mean) / ds.feature_std).astype(np.float32), ds.train_x)
    assert len(ds.val_ids) == len(ds.val_y) and len(ds.test_ids) == len(ds.test_y)


def test_a_partial_data_section_reads_the_defaults_from_defaults_py():
    """Loaders take plain dicts (tests, benchmarks); a key they omit is defaults.py's value, not a second
    default written in the loader."""
    from boostmis_jax.data.validate import cfg_get
    from boostmis_jax.defaults import get_config

    data = get_config().data
    for key in ("num_labels", "label_balance", "val_fraction", "test_fraction", "dicom_frame", "source"):
        assert cfg_get({}, key) == data[key]
        assert cfg_get({key: None}, key) == data[key]
    assert cfg_get({"num_labels": 7}, "num_labels") == 7
