"""Values are range-checked where they enter: config keys (seed, layer widths), the number of classes
(explicit or implied by a stray huge label), constant training data, and an out-of-memory step (one line
naming the sizes to lower). model.json's fields: tests/test_predict.py."""
from __future__ import annotations

import numpy as np
import pytest

from boostmis_jax import defaults
from boostmis_jax.data import load_dataset
from boostmis_jax.errors import UserError


@pytest.mark.parametrize("key,value", [("seed", -1), ("model.widths", (0,)), ("model.widths", (-4, 8)),
                                       ("model.widths", ()), ("model.hidden", (0,))])
def test_config_values_out_of_range(key, value):
    cfg = defaults.get_config()
    section, _, name = key.rpartition(".")
    (cfg[section] if section else cfg)[name] = value
    with pytest.raises(UserError, match=f"config {key}="):
        defaults.validate(cfg)


def npz(tmp_path, x, y, **cfg):
    np.savez(tmp_path / "d.npz", train_images=x, train_labels=y)
    return load_dataset({"source": "medmnist_npz", "path": str(tmp_path / "d.npz"), **cfg})


def images(n=40, c=1, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, 8, 8, c), dtype=np.uint8)


def test_explicit_num_classes_is_bounded(tmp_path):
    with pytest.raises(UserError, match="data.num_classes: 100,000 classes"):
        npz(tmp_path, images(), np.arange(40) % 2, num_classes=100_000)


def test_a_huge_label_does_not_make_billions_of_classes(tmp_path):
    y = np.arange(40) % 2
    y[7] = 2_000_000_000
    with pytest.raises(UserError, match="label 2,000,000,000 at row 7 .*relabel"):
        npz(tmp_path, images(), y)


def test_constant_images_are_named_not_blamed_on_the_lr(tmp_path):
    with pytest.raises(UserError, match="constant .*nothing to learn"):
        npz(tmp_path, np.full((40, 8, 8), 17, np.uint8), np.arange(40) % 2)


def test_identical_feature_rows(tmp_path):
    np.save(tmp_path / "train-features.npy", np.ones((30, 4), np.float32) * np.arange(4))
    np.save(tmp_path / "train-targets.npy", np.arange(30) % 2)
    with pytest.raises(UserError, match="identical"):
        load_dataset({"source": "mescc_features", "path": str(tmp_path)})


def test_a_constant_channel_normalises_to_zero_not_nan(tmp_path):
    x = images(c=3)
    x[..., 2] = 0  # an unused colour: std 0 in that channel only
    ds = npz(tmp_path, x, np.arange(40) % 2)
    assert np.all(ds.std > 0) and np.all(np.isfinite(ds.std))


def test_out_of_memory_is_one_line_naming_the_sizes():
    from boostmis_jax.main import _out_of_memory

    cfg = defaults.get_config()
    cfg.train.batch_size = 100_000
    oom = RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 80000000000 bytes.")
    line = _out_of_memory(oom, cfg)
    assert "train.batch_size=100000" in line and "--config.train.batch_size=25000" in line
    assert _out_of_memory(RuntimeError("some bug"), cfg) is None


def test_image_size_is_bounded():
    cfg = defaults.get_config()
    cfg.data.image_size = 100_000
    with pytest.raises(UserError, match="config data.image_size=100000"):
        defaults.validate(cfg)
