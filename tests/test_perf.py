"""Throughput a user can see: `perf/*` keys in metrics.jsonl, img/s on the progress line, `timing` in
summary.json; and the phase timer / throughput arithmetic they come from (no timed assertions)."""
import json
import time

import pytest
from helpers import TINY, TINY_AL, main_cmd, read_jsonl
from helpers import run_cmd as run

from boostmis_jax.reporting import PHASES, PhaseTimer, Throughput


def test_phase_timer_books_inner_phases_to_themselves_only(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["t"])
    seconds = {"eval": 1.0}  # a resumed run's dict: counted on, in place
    timer = PhaseTimer(seconds)
    with timer("train"):
        clock["t"] += 2.0
        with timer("eval"):
            clock["t"] += 3.0
        clock["t"] += 0.5
        timer.record("compile", 0.5)  # measured around a call inside train
    assert timer.seconds is seconds and set(PHASES) <= set(seconds)
    assert seconds["eval"] == 4.0 and seconds["compile"] == 0.5
    assert seconds["train"] == 2.0  # 5.5 s inside, 3.5 of them booked to eval and compile
    assert timer.other_than("train") == 4.5
    assert timer.rounded()["train"] == 2.0


def test_throughput_takes_other_phases_out_of_the_interval(monkeypatch):
    clock = {"t": 100.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["t"])
    timer = PhaseTimer()
    perf = Throughput(step=10, images_per_step=960, timer=timer, wall=lambda: 42.0)
    clock["t"] += 3.0
    timer.record("eval", 1.0)  # 1 s of the 3 were validation
    row = perf.row(30)  # 20 steps in 2 s of training
    assert row == {"perf/wall_s": 42.0, "perf/steps_per_s": 10.0, "perf/img_per_s": 9600.0}
    clock["t"] += 0.5
    assert perf.row(35)["perf/img_per_s"] == 5 * 960 / 0.5
    assert "perf/img_per_s" not in perf.row(35)  # no step since the last row: no rate, only the wall


def test_run_reports_throughput_and_timing(tmp_path):
    wd = tmp_path / "w"
    p = run(main_cmd(wd, *TINY, *TINY_AL, "--config.al.cycles=1", "--config.checkpoint.every_steps=10"))
    assert p.returncode == 0, p.stderr[-3000:]
    train = [r for r in read_jsonl(wd / "metrics.jsonl") if "train/loss" in r]
    assert train and all(r["perf/img_per_s"] > 0 and r["perf/steps_per_s"] > 0 for r in train)
    # B + 2 * uratio * B images a step (TINY: 16 + 2 * 2 * 16)
    assert all(r["perf/img_per_s"] == pytest.approx(80 * r["perf/steps_per_s"], rel=1e-3) for r in train)
    walls = [r["perf/wall_s"] for r in train]
    assert walls == sorted(walls) and walls[0] > 0
    assert "img/s=" in p.stderr  # the plain progress line (not a terminal here)
    timing = json.loads((wd / "summary.json").read_text())["timing"]
    assert set(PHASES) <= set(timing)
    # this run compiled a step, trained, validated, scored a pool and saved checkpoints
    assert all(timing[k] > 0 for k in PHASES), timing
