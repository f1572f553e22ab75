"""What libraries raise at an I/O boundary becomes one UserError line (errors.boundary): a damaged deflate
stream in an .npz (zlib.error), an out-of-range or unusable port (OverflowError, bind errors), and the
cause named right (busy port vs bad host)."""
from __future__ import annotations

import socket
import zlib

import numpy as np
import pytest
from test_annotate import _write as write_queries
from test_predict import call, data_cfg, export, pattern

from boostmis_jax.annotate.__main__ import main as annotate_main
from boostmis_jax.data import load_dataset
from boostmis_jax.errors import UserError


def damaged_npz(path, split: str = "train") -> None:
    """A compressed MedMNIST-layout npz whose `split` images' deflate stream is broken (zlib.error, not a
    CRC error)."""
    x = np.random.default_rng(0).integers(0, 4, (60, 8, 8), dtype=np.uint8)
    np.savez_compressed(path, **{f"{split}_images": x, f"{split}_labels": np.arange(60) % 2})
    raw = path.read_bytes()
    for start in range(100, 2000, 50):
        b = bytearray(raw)
        b[start:start + 8] = b"\xff" * 8
        path.write_bytes(bytes(b))
        try:
            with np.load(path) as a:
                a[f"{split}_images"]
        except zlib.error:
            return
        except Exception:  # noqa: BLE001, S112  another failure (CRC): try the next offset
            continue
    pytest.fail("could not produce a zlib.error")


def test_damaged_deflate_npz_as_data_is_one_line(tmp_path):
    damaged_npz(tmp_path / "d.npz")
    with pytest.raises(UserError, match=r"d\.npz.*damaged compressed data"):
        load_dataset(data_cfg(tmp_path / "d.npz", source="medmnist_npz"))


def test_damaged_deflate_npz_as_predict_input_is_one_line(tmp_path, capsys):
    x = np.stack([pattern(i % 2, 8, i) for i in range(30)])
    np.savez(tmp_path / "ok.npz", train_images=x[:20], train_labels=np.arange(20) % 2, test_images=x[20:],
             test_labels=np.arange(10) % 2)
    dcfg = data_cfg(tmp_path / "ok.npz", source="medmnist_npz")
    model = export(tmp_path, load_dataset(dcfg), dcfg)
    damaged_npz(tmp_path / "d.npz", "test")
    rc, _, err = call(["--model", model, "--input", tmp_path / "d.npz", "--output", tmp_path / "p.csv"],
                      capsys)
    assert rc == 2 and "d.npz" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "p.csv").exists()


def test_boundary_passes_user_errors_and_bugs_through():
    from boostmis_jax.errors import boundary, cap

    with pytest.raises(UserError, match="^f: unreadable \\(OverflowError: big\\); fix it$"):
        with boundary("f", "fix it"):
            raise OverflowError("big")
    with pytest.raises(NameError):  # our own bug keeps its traceback
        with boundary("f", "fix it"):
            raise NameError("bug")
    assert len(cap("x" * 10_000)) < 200


@pytest.mark.parametrize("args,says", [(["--port", "70000"], "--port 70000"), (["--port", "-1"], "--port -1"),
                                       (["--host", "no-such-host.invalid"], "--host"),
                                       (["--host", "x" * 300], "--host")])
def test_annotate_bad_port_or_host_is_one_line(tmp_path, capsys, args, says):
    write_queries(tmp_path)
    assert annotate_main(["--workdir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_annotate_port_in_use_says_so(tmp_path, capsys):
    write_queries(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert annotate_main(["--workdir", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert "in use" in err and "--port" in err and "--host" not in err, err


def test_npz_members_a_source_does_not_use_are_never_read(tmp_path):
    """Only the arrays a source names are read. An extra member (here a header announcing 2 GB, standing
    for a 3 GB one) costs nothing; reading every member eagerly failed on it (or took the memory)."""
    import zipfile

    x = np.stack([pattern(i % 2, 8, i) for i in range(30)])
    np.savez(tmp_path / "m.npz", train_images=x, train_labels=np.arange(30) % 2)
    import io

    header = io.BytesIO()  # a valid .npy header announcing 2**28 float64 values (2 GB), then no data
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (1 << 28,)})
    with zipfile.ZipFile(tmp_path / "m.npz", "a") as z:
        z.writestr("unused.npy", header.getvalue())
    ds = load_dataset(data_cfg(tmp_path / "m.npz", source="medmnist_npz"))
    assert len(ds.train_y) + len(ds.val_y) + len(ds.test_y) == 30


@pytest.mark.parametrize("text,says", [("[[1, 2], [3]]", "not a flat list"), ("[1e30]", r"index 1e\+30 ")])
def test_split_file_ragged_or_huge_is_one_line(tmp_path, text, says):
    from boostmis_jax.data.split import load_split_file

    (tmp_path / "s.json").write_text(text)
    with pytest.raises(UserError, match=says):
        load_split_file(tmp_path / "s.json", 40)


@pytest.mark.parametrize("args", [["--port", "http"], ["--cycle", "last"]])
def test_annotate_bad_argument_types_are_one_line(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as e:
        annotate_main(["--workdir", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "invalid int value" in err, err


@pytest.mark.parametrize("edit", [{"index": "x"}, {"score": None}, {"predicted": [1]}])
def test_hand_edited_manifest_is_one_line(tmp_path, edit):
    import json

    from boostmis_jax.annotate.server import Annotator
    from boostmis_jax.oracle import cycle_paths

    write_queries(tmp_path)
    path = cycle_paths(0, tmp_path).manifest
    d = json.loads(path.read_text())
    d["queries"][0].update(edit)
    path.write_text(json.dumps(d))
    with pytest.raises(UserError, match="cycle_0.json: unreadable"):
        Annotator(tmp_path, 0)
