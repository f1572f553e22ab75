"""Nothing ambiguous is resolved silently: numeric class names vs class ids in the query CSV, split folders
beside other folders, a pending query CSV under the simulated oracle, an explicit split of one class, a
workdir whose checkpoints are gone but whose outputs are not, an edit to a CSV the run already read."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_predict import data_cfg, write_folder

from boostmis_jax.annotate.server import Annotator
from boostmis_jax.checkpointing import Checkpointer
from boostmis_jax.data import ensure_split, load_dataset
from boostmis_jax.errors import UserError
from boostmis_jax.oracle import FilesOracle, LabelSpace, Query, SimulatedOracle, cycle_paths, read_answers

QUERIES = [Query(index=3, id="a.png", selector="aus", score=0.5, predicted=0),
           Query(index=8, id="b.png", selector="bus", score=0.4, predicted=1)]


def fill(csv_path, labels: dict[int, str]) -> None:
    lines = csv_path.read_text().splitlines()
    out = [lines[0]] + [ln + labels[int(ln.split(",")[0])] if ln.endswith(",") else ln for ln in lines[1:]]
    csv_path.write_text("\n".join(out) + "\n")


def test_numeric_class_names_are_read_as_names_never_as_ids(tmp_path):
    space = LabelSpace(2, ["1", "2"])  # folders 1/ and 2/ are class ids 0 and 1
    assert space.by_name_only and space.parse("1") == 0 and space.parse("2") == 1
    assert space.parse("0") is None  # an id: ambiguous here, refused (names only)
    oracle = FilesOracle(2, ["1", "2"], None, command=["true"], cwd=str(tmp_path))
    assert oracle.answer(0, QUERIES, tmp_path) is None
    csv = cycle_paths(0, tmp_path).csv
    fill(csv, {3: "1", 8: "2"})
    assert oracle.answer(0, QUERIES, tmp_path) == {3: 0, 8: 1}
    # the page sends class ids: written as names, read back as the same classes
    (tmp_path / "b").mkdir()
    oracle.answer(0, QUERIES, tmp_path / "b")
    a = Annotator(tmp_path / "b", 0)
    rows = {r["index"]: r for r in a.state()["rows"]}
    a.answer(3, 1, rows[3]["version"])
    assert "2" == cycle_paths(0, tmp_path / "b").csv.read_text().splitlines()[1].split(",")[-1]
    assert read_answers(cycle_paths(0, tmp_path / "b").csv, QUERIES, space, partial=True) == {3: 1}
    # names equal to their ids ("0", "1") stay as before: ids and names agree
    assert not LabelSpace(2, ["0", "1"]).by_name_only


@pytest.mark.parametrize("extra", ["holdout", "unlabeled"])
def test_split_folders_beside_other_folders_are_refused(tmp_path, extra):
    for split in ("train", "test", extra):
        write_folder(tmp_path / "d" / split, 3)
    says = f"split folders \\(test, train\\) beside other folders \\({extra}\\)"
    with pytest.raises(UserError, match=says):
        load_dataset(data_cfg(tmp_path / "d"))


def test_simulated_oracle_refuses_a_pending_query_csv(tmp_path):
    FilesOracle(2, ["a", "b"], None, command=["true"]).answer(0, QUERIES, tmp_path)
    with pytest.raises(UserError, match="al.oracle=files"):
        SimulatedOracle(np.arange(10) % 2).answer(0, QUERIES, tmp_path)
    assert SimulatedOracle(np.arange(10) % 2).answer(1, QUERIES, tmp_path) == {3: 1, 8: 0}  # no pending CSV


def test_split_file_of_one_class_warns(tmp_path, capsys):
    y = np.arange(20) % 2
    (tmp_path / "split.json").write_text(json.dumps([0, 2, 4]))
    ensure_split(tmp_path / "w", {"split_file": str(tmp_path / "split.json"), "num_labels": 3}, y, 0)
    err = capsys.readouterr().err
    assert "warning:" in err and "all class 0" in err and err.count("\n") == 1


@pytest.mark.parametrize("output", ["summary.json", "metrics.jsonl", "model"])
def test_deleted_checkpoints_beside_outputs_refuse(tmp_path, output):
    (tmp_path / output).mkdir() if output == "model" else (tmp_path / output).write_text("{}\n")
    with pytest.raises(UserError, match="checkpoints: missing, but .* holds a run's outputs"):
        Checkpointer(tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_an_edit_to_a_read_csv_is_reported_and_its_page_refused(tmp_path, capsys):
    from boostmis_jax.annotate.server import ApiError

    oracle = FilesOracle(2, ["a", "b"], None, command=["true"])
    oracle.answer(0, QUERIES, tmp_path)
    csv = cycle_paths(0, tmp_path).csv
    page = Annotator(tmp_path, 0)  # open while the run reads the CSV
    fill(csv, {3: "a", 8: "b"})
    assert oracle.answer(0, QUERIES, tmp_path) == {3: 0, 8: 1}
    version = {r["index"]: r["version"] for r in page.state()["rows"]}[3]
    with pytest.raises(ApiError, match="already read"):
        page.answer(3, 1, version)
    csv.write_text(csv.read_text().replace("b.png,bus,0.4,1,b,b", "b.png,bus,0.4,1,b,a"))
    later = [Query(index=5, id="c.png", selector="aus", score=0.3, predicted=0)]
    capsys.readouterr()
    oracle.answer(1, later, tmp_path)
    err = capsys.readouterr().err
    assert "cycle_0.csv was edited after the run read it (rows with index 8)" in err
    with pytest.raises(UserError, match="already read these answers"):
        Annotator(tmp_path, 0)
