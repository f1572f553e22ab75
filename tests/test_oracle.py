"""Simulated oracle returns ground truth; files oracle round trip and every rejection path."""
import csv
import dataclasses
import sys

import numpy as np
import pytest
from PIL import Image

from boostmis_jax import oracle as oracle_mod
from boostmis_jax.errors import UserError
from boostmis_jax.oracle import (
    ORACLES,
    FilesOracle,
    LabelSpace,
    Query,
    SimulatedOracle,
    cycle_paths,
    invocation,
    latest_cycle,
    make_oracle,
    read_answers,
    read_manifest,
    write_answers,
)

CLASSES = ["normal", "pneumonia", "covid"]


def _queries():
    return [
        Query(index=7, id="img_007.png", selector="aus", score=0.91, predicted=0),
        Query(index=2, id="img_002.png", selector="bus", score=0.5, predicted=2),
        Query(index=11, id="img_011.png", selector="aus", score=0.12345678, predicted=1),
    ]


def test_simulated_returns_ground_truth(tmp_path):
    y = np.arange(20) % 3
    oracle = SimulatedOracle(y)
    assert oracle.answer(0, _queries(), tmp_path) == {7: 1, 2: 2, 11: 2}
    assert list(tmp_path.iterdir()) == []  # writes nothing


def test_simulated_unknown_label_is_user_error(tmp_path):
    y = np.full(20, -1)
    with pytest.raises(UserError, match="oracle=files"):
        SimulatedOracle(y).answer(0, _queries(), tmp_path)


def test_make_oracle_registry():
    assert {"simulated", "files"} <= set(ORACLES)
    kw = {"train_y": np.zeros(3, int), "num_classes": 3, "class_names": CLASSES, "images": None}
    assert isinstance(make_oracle("simulated", **kw), SimulatedOracle)
    assert isinstance(make_oracle("files", **kw), FilesOracle)
    with pytest.raises(UserError, match="unknown oracle 'human'"):
        make_oracle("human", **kw)


def _write_round(tmp_path, images=None, cycle=0):
    oracle = FilesOracle(3, CLASSES, images)
    assert oracle.answer(cycle, _queries(), tmp_path) is None
    return oracle, tmp_path / "queries" / f"cycle_{cycle}.csv"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _fill(path, labels, edit=None):
    rows = _rows(path)
    for r, lab in zip(rows[1:], labels):
        r[-1] = lab
    if edit:
        rows = edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_files_round_trip(tmp_path, capsys):
    images = (np.random.default_rng(0).random((20, 28, 28, 1)) * 255).astype(np.uint8)
    oracle, path = _write_round(tmp_path, images)
    out = capsys.readouterr().out
    assert str(path) in out and "re-run" in out and "0=normal" in out

    rows = _rows(path)
    assert rows[0] == ["index", "id", "selector", "score", "predicted", "predicted_name", "label"]
    assert rows[1] == ["7", "img_007.png", "aus", "0.91", "0", "normal", ""]
    assert rows[2][5] == "covid" and rows[3][3] == "0.123457"
    png = tmp_path / "queries" / "cycle_0.png"
    img = Image.open(png)
    img.load()
    assert img.width >= 3 * 96 and img.height >= 96

    _fill(path, ["1", "Covid", " normal "])  # ints, class names (case/whitespace-insensitive)
    assert oracle.answer(0, _queries(), tmp_path) == {7: 1, 2: 2, 11: 0}
    # answering again is idempotent and does not touch the file
    before = path.read_bytes()
    assert oracle.answer(0, _queries(), tmp_path) == {7: 1, 2: 2, 11: 0}
    assert path.read_bytes() == before


def test_files_no_images_no_png(tmp_path):
    _write_round(tmp_path, None, cycle=3)
    assert sorted(p.name for p in (tmp_path / "queries").iterdir()) == ["cycle_3.csv", "cycle_3.json"]
    assert read_manifest(3, tmp_path).has_images is False


def test_files_accepts_semicolon_bom_and_blank_rows(tmp_path):
    oracle, path = _write_round(tmp_path)
    rows = _rows(path)
    labels = ["2", "1.0", "pneumonia"]
    body = "\n".join(";".join(r[:-1] + [lab]) for r, lab in zip(rows, ["label"] + labels))
    text = "\ufeff" + body + "\n;;;;;;\n"
    path.write_text(text, encoding="utf-8")
    assert oracle.answer(0, _queries(), tmp_path) == {7: 2, 2: 1, 11: 1}


def _swap_id(rows):
    rows[2][1] = "img_999.png"
    return rows


def _unknown_index(rows):
    rows[2][0] = "5"
    return rows


def _duplicate(rows):
    return rows + [list(rows[1])]


def _missing(rows):
    return rows[:3]


@pytest.mark.parametrize(
    "labels,edit,pattern",
    [
        (["1", "", "0"], None, r"row 3 \(id=img_002.png\): label is empty; fill every label"),
        (["1", "3", "0"], None, r"row 3 \(id=img_002.png\): label '3' is neither a class id in \[0, 3\)"),
        (["1", "-1", "0"], None, r"row 3 .*label '-1' is neither"),
        (["1", "flu", "0"], None, r"row 3 .*label 'flu' is neither"),
        (["1", "2", "0"], _swap_id, r"row 3 \(id=img_999.png\): id does not match index 2"),
        (["1", "2", "0"], _unknown_index, r"row 3 \(id=img_002.png\): index 5 was not among the queries"),
        (["1", "2", "0"], _duplicate, r"row 5 \(id=img_007.png\): duplicate of row 2"),
        (["1", "2", "0"], _missing, r"no row for index 11 \(id=img_011.png\)"),
    ],
    ids=["empty", "out_of_range", "negative", "unknown_name", "unknown_id", "unknown_index", "duplicate",
         "missing"],
)
def test_files_rejections(tmp_path, labels, edit, pattern):
    oracle, path = _write_round(tmp_path)
    _fill(path, labels, edit)
    before = path.read_bytes()
    listing = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(UserError, match=pattern) as e:
        oracle.answer(0, _queries(), tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.rglob("*")) == listing


def test_files_reports_first_problem_and_count(tmp_path):
    oracle, path = _write_round(tmp_path)
    _fill(path, ["", "", "x"])
    with pytest.raises(UserError, match=r"row 2 .*label is empty.*\(\+2 more problem"):
        oracle.answer(0, _queries(), tmp_path)


def test_files_bad_header(tmp_path):
    oracle, path = _write_round(tmp_path)
    path.write_text("foo,bar\n7,x\n")
    with pytest.raises(UserError, match="header lacks column"):
        oracle.answer(0, _queries(), tmp_path)


def test_files_class_names_length_checked():
    with pytest.raises(UserError, match="class_names"):
        FilesOracle(3, ["a", "b"], None)


def test_files_writes_manifest_and_one_png_per_query(tmp_path):
    images = (np.random.default_rng(1).random((20, 6, 5, 1)) * 255).astype(np.uint8)
    qs = [dataclasses.replace(q, selectors=(q.selector, "bus"), confidence=0.75) for q in _queries()]
    oracle = FilesOracle(3, CLASSES, images, command=["python", "-m", "boostmis_jax.main", "--workdir=w"],
                         cwd="/somewhere")
    assert oracle.answer(2, qs, tmp_path) is None
    m = read_manifest(2, tmp_path)
    assert m.cycle == 2 and m.class_names == CLASSES and m.has_images
    assert m.queries == qs  # round-trips every field, selectors as a tuple
    assert m.command == ["python", "-m", "boostmis_jax.main", "--workdir=w"] and m.cwd == "/somewhere"
    paths = cycle_paths(2, tmp_path)
    for pos, q in enumerate(qs):  # the pixels the model sees, at their own size, named by position
        arr = np.asarray(Image.open(paths.image(pos)))
        np.testing.assert_array_equal(arr, images[q.index, ..., 0])
    assert sorted(p.name for p in paths.images.iterdir()) == ["000.png", "001.png", "002.png"]
    assert latest_cycle(tmp_path) == 2


def test_files_records_this_process_command(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/x/boostmis_jax/main.py", "--config=c.py", "--workdir=w"])
    monkeypatch.chdir(tmp_path)
    FilesOracle(3, CLASSES, None).answer(0, _queries(), tmp_path)
    m = read_manifest(0, tmp_path)
    assert m.command == [sys.executable, "-m", "boostmis_jax.main", "--config=c.py", "--workdir=w"]
    assert m.cwd == str(tmp_path)


def test_invocation_forms(tmp_path):
    script = tmp_path / "go.py"
    script.write_text("")
    assert invocation([str(script), "-a"]) == [sys.executable, str(script), "-a"]
    assert invocation(["-c"]) is None and invocation([]) is None
    assert invocation(["boostmis-jax", "--workdir=w"]) == ["boostmis-jax", "--workdir=w"]


def test_partial_read_skips_only_empty_labels(tmp_path):
    _, path = _write_round(tmp_path)
    labels = LabelSpace(3, CLASSES)
    assert read_answers(path, _queries(), labels, partial=True) == {}
    _fill(path, ["1", "", "covid"])
    assert read_answers(path, _queries(), labels, partial=True) == {7: 1, 11: 2}
    with pytest.raises(UserError, match="label is empty"):
        read_answers(path, _queries(), labels)
    _fill(path, ["1", "7", ""])
    with pytest.raises(UserError, match=r"label '7' is neither"):
        read_answers(path, _queries(), labels, partial=True)


def test_write_answers_is_what_the_oracle_reads(tmp_path):
    oracle, path = _write_round(tmp_path)
    write_answers(path, _queries(), oracle.labels, {7: 2, 2: 0, 11: 1})
    assert oracle.answer(0, _queries(), tmp_path) == {7: 2, 2: 0, 11: 1}
    assert _rows(path)[1] == ["7", "img_007.png", "aus", "0.91", "0", "normal", "2"]


def test_write_answers_refuses_bad_labels_and_keeps_the_file(tmp_path):
    oracle, path = _write_round(tmp_path)
    before = path.read_bytes()
    with pytest.raises(UserError, match=r"label '3' is neither a class id in \[0, 3\)"):
        write_answers(path, _queries(), oracle.labels, {7: 3})
    assert path.read_bytes() == before


def test_write_answers_is_atomic(tmp_path, monkeypatch):
    oracle, path = _write_round(tmp_path)
    write_answers(path, _queries(), oracle.labels, {7: 1})
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(oracle_mod.os, "replace", boom)  # fsutil and oracle share the os module
    with pytest.raises(OSError, match="disk full"):
        write_answers(path, _queries(), oracle.labels, {7: 1, 2: 2, 11: 0})
    assert path.read_bytes() == before  # the old file, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["cycle_0.csv", "cycle_0.json"]  # no tmp left


def test_manifest_missing_is_one_line(tmp_path):
    _write_round(tmp_path)
    cycle_paths(0, tmp_path).manifest.unlink()
    with pytest.raises(UserError, match="older version") as e:
        read_manifest(0, tmp_path)
    assert "\n" not in str(e.value)
