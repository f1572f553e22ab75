"""MetricsWriter resume/corruption handling, atomic JSON, and the PNG outputs."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from boostmis_jax.errors import UserError
from boostmis_jax.reporting import (
    MetricsWriter,
    Progress,
    contact_sheet,
    plot_confusion_matrix,
    plot_learning_curve,
    plot_roc,
    plot_threshold,
    read_jsonl,
    roc_curves,
    write_json_atomic,
)


def test_metrics_writer_converts_and_nan_is_null(tmp_path):
    import jax.numpy as jnp

    path = tmp_path / "sub" / "metrics.jsonl"
    w = MetricsWriter(path)
    w.write(1, {"loss": np.float32(0.5), "n": np.int64(3), "acc": jnp.asarray(0.25), "bad": float("nan"),
                "inf": np.float64(np.inf), "recall": [np.float32(0.5), 1.0], "cm": np.eye(2, dtype=np.int32)})
    w.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    assert "NaN" not in lines[0] and "Infinity" not in lines[0]
    row = json.loads(lines[0])
    assert row == {"step": 1, "loss": 0.5, "n": 3, "acc": 0.25, "bad": None, "inf": None,
                   "recall": [0.5, 1.0], "cm": [[1, 0], [0, 1]]}


def test_metrics_writer_flushes_each_line(tmp_path):
    path = tmp_path / "m.jsonl"
    w = MetricsWriter(path)
    w.write(0, {"a": 1})
    assert read_jsonl(path) == [{"step": 0, "a": 1}]  # visible before close
    w.close()


def test_metrics_writer_resume_truncates_and_drops_corrupt_tail(tmp_path):
    path = tmp_path / "m.jsonl"
    with MetricsWriter(path) as w:
        for s in range(1, 6):
            w.write(s * 10, {"v": s})
    with open(path, "a") as f:
        f.write('{"step": 60, "v"')  # killed mid-write
    with pytest.raises(json.JSONDecodeError):
        [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in read_jsonl(path)] == [10, 20, 30, 40, 50]  # reader skips the torn tail

    w = MetricsWriter(path, resume_step=30)
    assert [r["step"] for r in read_jsonl(path)] == [10, 20, 30]
    w.write(40, {"v": 99})
    w.close()
    rows = read_jsonl(path)
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[-1]["v"] == 99
    assert not [p for p in tmp_path.iterdir() if p.name != "m.jsonl"]  # no tmp files left


def test_metrics_writer_fresh_run_starts_empty(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 5}\n')
    MetricsWriter(path).close()
    assert read_jsonl(path) == []


def test_read_jsonl_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl")
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(UserError, match="line 2"):
        read_jsonl(p)


def test_write_json_atomic(tmp_path):
    path = tmp_path / "a" / "summary.json"
    write_json_atomic(path, {"x": np.float32(1.5), "y": [1, 2], "z": float("nan")})
    assert json.loads(path.read_text()) == {"x": 1.5, "y": [1, 2], "z": None}
    write_json_atomic(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]
    # a failed write leaves the old file intact and no tmp behind
    with pytest.raises(TypeError):
        write_json_atomic(path, {"x": object()})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_progress_smoke():
    p = Progress(total=5, initial=2, desc="t", disable=True)
    p.update(1, loss=np.float32(0.123456))
    p.close()


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_without_a_terminal_prints_plain_lines_every_few_percent():
    out = _Stream(tty=False)
    p = Progress(total=200, initial=40, desc="cycle 0", disable=False, stream=out)
    for i in range(160):
        p.update(1)
        if i == 3:
            p.update(0, loss=0.5)
    p.close()
    p.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert [ln.split()[2] for ln in lines] == [f"{n}/200" for n in range(50, 201, 10)]  # every 5% = 10 steps
    assert lines[0].startswith("cycle 0: 50/200 (25%)") and lines[-1].endswith("loss=0.5") and p.n == 200


def test_progress_on_a_terminal_is_a_redrawn_bar():
    out = _Stream(tty=True)
    p = Progress(total=10, desc="t", disable=False, stream=out)
    p.update(5)
    p.close()
    assert "\r" in out.getvalue()


def test_progress_close_then_error_leaves_the_error_last():
    out = _Stream(tty=False)
    p = Progress(total=100, desc="c", disable=False, stream=out)
    p.update(7)
    p.close()
    p.update(50)  # a late update after close (e.g. a finally) prints nothing
    print("error: diverged", file=out)
    assert out.getvalue().splitlines()[-1] == "error: diverged"


def _png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(path)
    img.load()
    return img


def test_learning_curve_png(tmp_path):
    rows = [{"labeled": n, "test/macro_f1": f + off, "method": m}
            for m, off in (("boostmis", 0.1), ("random", 0.0)) for n, f in ((40, 0.5), (80, 0.6), (20, 0.4))]
    rows.append({"labeled": 100, "test/macro_f1": None, "method": "random"})  # NaN logged as null: skipped
    path = tmp_path / "curve.png"
    plot_learning_curve(path, rows)
    img = _png(path)
    assert img.width >= 300 and img.height >= 200
    # single series (no series_key) and empty input both still produce a file
    plot_learning_curve(tmp_path / "one.png", [{"labeled": 1, "test/macro_f1": 0.3}])
    plot_learning_curve(tmp_path / "empty.png", [])
    _png(tmp_path / "one.png")
    _png(tmp_path / "empty.png")


def test_confusion_matrix_png(tmp_path):
    path = tmp_path / "cm.png"
    plot_confusion_matrix(path, [[5, 1], [2, 7]], ["normal", "pneumonia"])
    assert _png(path).width >= 200
    with pytest.raises(ValueError):
        plot_confusion_matrix(path, [[1, 2]], ["a"])


@pytest.mark.parametrize("dtype,channels", [(np.uint8, 1), (np.float32, 3)])
def test_contact_sheet(tmp_path, dtype, channels):
    rng = np.random.default_rng(0)
    n, h, w = 10, 28, 28
    imgs = rng.random((n, h, w, channels))
    imgs = (imgs * 255).astype(np.uint8) if dtype == np.uint8 else imgs.astype(np.float32)
    path = tmp_path / "sheet.png"
    contact_sheet(path, imgs, [f"img_{i}.png\npred: normal" for i in range(n)], cols=4)
    img = _png(path)
    assert img.mode == "RGB"
    # auto scale: 28 px -> x4 = 112 px tiles; 4 columns, 3 rows plus captions
    assert img.width >= 4 * 112 and img.height >= 3 * 112
    assert img.width < 4 * 112 + 100
    # the first tile is the first image upscaled (nearest): its top-left pixel matches
    px = img.getpixel((6, 6))
    first = imgs[0, 0, 0]
    expect = (first * 255 + 0.5).astype(np.uint8) if dtype == np.float32 else first
    assert px == tuple(int(v) for v in np.broadcast_to(expect, (3,)))


def test_contact_sheet_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        contact_sheet(tmp_path / "x.png", np.zeros((2, 8, 8, 2), np.uint8), ["a", "b"])
    with pytest.raises(ValueError):
        contact_sheet(tmp_path / "x.png", np.zeros((2, 8, 8, 1), np.uint8), ["a"])


def test_roc_curves_and_png(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    probs = rng.dirichlet(np.ones(3), size=60)
    probs[y == 0] = [0.9, 0.05, 0.05]  # class 0 separated perfectly
    curves = roc_curves(probs, y, ["a", "b", "c"])
    assert [c["name"] for c in curves] == ["a", "b", "c"] and curves[0]["auc"] == 1.0
    from sklearn.metrics import roc_auc_score
    assert curves[1]["auc"] == pytest.approx(roc_auc_score(y == 1, probs[:, 1]))
    plot_roc(tmp_path / "roc.png", probs, y, ["a", "b", "c"])
    assert _png(tmp_path / "roc.png").width >= 300
    one_sided = roc_curves(probs[:40], y[:40], ["a", "b", "c"])  # no example of "c"
    assert one_sided[2]["fpr"] is None and np.isnan(one_sided[2]["auc"])
    plot_roc(tmp_path / "roc2.png", probs[:40], y[:40], ["a", "b", "c"])
    _png(tmp_path / "roc2.png")
    with pytest.raises(ValueError):
        plot_roc(tmp_path / "bad.png", probs[:, :2], y, ["a", "b", "c"])


def test_threshold_png(tmp_path):
    rows = [{"step": s, "train/threshold": 0.9 - 0.001 * s, "train/mask_rate": 0.01 * s,
             "train/learning_status": 1.0} for s in range(5, 100, 5)]
    rows.append({"step": 50, "eval/macro_f1": 0.5})
    plot_threshold(tmp_path / "threshold.png", rows, cycle_steps=[40, 80])
    assert _png(tmp_path / "threshold.png").height >= 300
    plot_threshold(tmp_path / "empty.png", [{"step": 1, "train/loss": 1.0}])
    _png(tmp_path / "empty.png")


def test_background_runs_jobs_in_order_off_the_loop_thread_and_reraises_the_first_failure():
    import threading

    from boostmis_jax.reporting import Background

    bg, seen = Background(), []
    bg.submit(lambda: seen.append(("a", threading.current_thread().name)))
    bg.submit(lambda: seen.append(("b", threading.current_thread().name)))
    bg.wait()
    assert [s[0] for s in seen] == ["a", "b"]
    assert all(name != threading.current_thread().name for _, name in seen)

    def boom():
        raise OSError("disk full")

    bg.submit(boom)
    with pytest.raises(OSError, match="disk full"):
        bg.close()
