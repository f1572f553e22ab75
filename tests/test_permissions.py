"""Outputs follow the umask like any tool's: files 0666 & ~umask, folders 0777 & ~umask (mkstemp/mkdtemp
make them 0600/0700 while private; the finished output is published with the umask's modes)."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from test_predict import data_cfg, export, write_folder

from boostmis_jax.data import load_dataset
from boostmis_jax.fsutil import atomic_write_text
from boostmis_jax.reporting import write_json_atomic, write_predictions


@pytest.fixture(params=[0o022, 0o077])
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_umask_is_read_without_changing_it(mask):
    from boostmis_jax.fsutil import umask

    assert umask() == mask
    assert umask() == mask


def test_files_and_model_folder_follow_the_umask(tmp_path, mask):
    atomic_write_text(tmp_path / "a.txt", "x")
    write_json_atomic(tmp_path / "summary.json", {"a": 1})
    write_predictions(tmp_path / "p.csv", ["0"], np.array([[0.3, 0.7]]), ["a", "b"], None)
    for name in ("a.txt", "summary.json", "p.csv"):
        assert mode(tmp_path / name) == 0o666 & ~mask, name
    write_folder(tmp_path / "train", 4)
    dcfg = data_cfg(tmp_path / "train")
    model = export(tmp_path, load_dataset(dcfg), dcfg)
    assert mode(model) == 0o777 & ~mask
    for folder, dirs, files in os.walk(model):
        for d in dirs:
            assert mode(os.path.join(folder, d)) == 0o777 & ~mask, d
        for f in files:
            assert mode(os.path.join(folder, f)) == 0o666 & ~mask, f
