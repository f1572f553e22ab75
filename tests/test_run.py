"""In-process end to end, in the manner of flax's examples/imagenet/train_test.py: a tiny config through
`train.run` (one stage, one acquisition round, one more stage) to the workdir's outputs."""
import json

from helpers import read_jsonl

from boostmis_jax import train
from boostmis_jax.defaults import get_config


def tiny_config():
    cfg = get_config()
    cfg.model.widths = (8, 16)
    cfg.data.num_labels = 30
    cfg.train.update(steps=6, batch_size=16, log_every=3, eval_every=3, eval_batch_size=128)
    cfg.ssl.uratio = 2
    cfg.al.update(cycles=1, steps_per_cycle=4, budget=3, chunk=64, knn_block=256)
    return cfg


def test_tiny_run_in_process_writes_summary_and_grows_the_labeled_set(tmp_path):
    out = train.run(tiny_config(), str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == out["steps"] == 10
    assert [c["labeled"] for c in summary["cycles"]] == [30, 36]
    assert summary["n_active"] == 6 and len(summary["picks"]["0"]) == 6
    assert 0.0 <= summary["test"]["macro_f1"] <= 1.0
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows if "train/loss" in r] == [3, 6, 9, 10]
    assert [r["cycle"] for r in rows if "test/macro_f1" in r] == [0, 1]


def test_cycle_plots_are_finished_when_run_returns_and_a_plot_failure_is_raised(tmp_path, monkeypatch):
    import threading

    import pytest

    from boostmis_jax import reporting
    from boostmis_jax.errors import UserError

    # the plots render off the loop's thread, and every one exists once run() returns
    threads = []
    real = reporting.plot_confusion_matrix
    monkeypatch.setattr(reporting, "plot_confusion_matrix",
                        lambda *a, **k: (threads.append(threading.current_thread().name), real(*a, **k)))
    train.run(tiny_config(), str(tmp_path / "ok"))
    assert threads and all(t != threading.current_thread().name for t in threads)
    for png in ("confusion_matrix.png", "roc.png", "threshold.png", "learning_curve.png"):
        assert (tmp_path / "ok" / png).stat().st_size > 1000

    # a plot that fails is not lost on the background thread: run() raises it, the checkpoints are kept
    def broken(path, *a, **k):
        raise UserError(f"{path}: cannot write; free some disk space")

    monkeypatch.setattr(reporting, "plot_roc", broken)
    with pytest.raises(UserError, match="roc.png: cannot write"):
        train.run(tiny_config(), str(tmp_path / "bad"))
    assert any((tmp_path / "bad" / "checkpoints").iterdir())
