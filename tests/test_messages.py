"""Messages name the right cause, fix and size: a long value is cut, a FIFO is not 'a folder', a
tab-delimited CSV is read, a folder where a query file belongs is named as such, a config file without
get_config names the user's file. (Busy port vs bad host: test_boundaries.py; a val/test class missing from
train names that split: test_data.py; an unknown model kind: test_predict.py.)"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, env

from boostmis_jax.data import load_dataset
from boostmis_jax.errors import UserError
from boostmis_jax.oracle import FilesOracle, Query, cycle_paths

QUERIES = [Query(index=3, id="a.png", selector="aus", score=0.5, predicted=0),
           Query(index=8, id="b.png", selector="bus", score=0.4, predicted=1)]


def test_a_message_listing_thousands_of_classes_stays_short(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (40, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", train_images=x, train_labels=(np.arange(40) % 2) * 9000)  # labels x9000
    with pytest.raises(UserError) as e:
        load_dataset({"source": "medmnist_npz", "path": str(tmp_path / "d.npz")})
    assert "(8,999 in all)" in str(e.value) and len(str(e.value)) < 600, str(e.value)[:1000]


def test_a_fifo_is_not_called_a_folder(tmp_path):
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(UserError, match="is a FIFO"):
        load_dataset({"source": "medmnist_npz", "path": str(tmp_path / "pipe.npz")})
    with pytest.raises(UserError, match="is a FIFO .*expected a folder"):
        load_dataset({"source": "image_folder", "path": str(tmp_path / "pipe.npz")})


def test_tab_delimited_query_csv_is_read(tmp_path):
    oracle = FilesOracle(2, ["a", "b"], None, command=["true"])
    oracle.answer(0, QUERIES, tmp_path)
    csv = cycle_paths(0, tmp_path).csv
    lines = csv.read_text().splitlines()
    filled = [lines[0]] + [ln + ("a" if ln.startswith("3,") else "b") for ln in lines[1:]]
    csv.write_text("\n".join(ln.replace(",", "\t") for ln in filled) + "\n")  # "Text (tab-delimited)"
    assert oracle.answer(0, QUERIES, tmp_path) == {3: 0, 8: 1}


def test_a_folder_where_the_query_csv_belongs(tmp_path):
    cycle_paths(0, tmp_path).csv.mkdir(parents=True)
    with pytest.raises(UserError, match="cycle_0.csv: a folder where this cycle's query file belongs"):
        FilesOracle(2, ["a", "b"], None, command=["true"]).answer(0, QUERIES, tmp_path)


def test_config_file_without_get_config_names_the_file(tmp_path):
    cfg = tmp_path / "mine.py"
    cfg.write_text("x = 1\n")
    p = subprocess.run([sys.executable, "-m", "boostmis_jax.main", f"--config={cfg}",
                        f"--workdir={tmp_path}/w"], cwd=ROOT, env=env(), capture_output=True, text=True,
                       timeout=300, check=False)
    assert p.returncode == 2
    last = p.stderr.strip().splitlines()[-1]
    assert str(cfg) in last and "get_config()" in last and "config_config" not in last, p.stderr[-1000:]


def test_a_folder_given_as_split_file_is_named(tmp_path):
    from boostmis_jax.data.split import load_split_file

    (tmp_path / "split.json").mkdir()
    with pytest.raises(UserError, match="split.json: is a folder, not a split file"):
        load_split_file(tmp_path / "split.json", 10)
