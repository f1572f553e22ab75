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


def _clustered_pool(n_clusters=64, size=8, dim=48, seed=0):
    """Unit rows in tight clusters of `size` (within-cluster cosine ~0.9, across ~0 +- 0.3): each row's
    size-1 nearest rows are its cluster, far from the rest, so the top-(size-1) set is well separated."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim))
    emb = np.repeat(centers, size, axis=0) + 0.25 * rng.normal(size=(n_clusters * size, dim))
    return emb[rng.permutation(len(emb))].astype(np.float32)


def test_bf16_knn_topk_equals_fp32_on_a_separated_pool():
    import jax.numpy as jnp
    import numpy as np

    from boostmis_jax.acquisition.density import knn_density, knn_neighbours

    emb = _clustered_pool()
    # invalid rows (exact copies of valid ones: the nearest rows of all, were they valid) are nobody's
    # neighbour on either path
    emb = np.concatenate([emb, emb[:: 64] + 1e-3])
    valid = np.arange(len(emb)) < 512
    k = 7
    e, v = jnp.asarray(emb), jnp.asarray(valid)
    s32, i32 = map(np.asarray, knn_neighbours(e, v, k=k, block=128, precision="float32"))
    s16, i16 = map(np.asarray, knn_neighbours(e, v, k=k, block=128, precision="bfloat16"))
    # brute force in float64: the crafted gap between a row's k-th and (k+1)-th neighbour
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = u @ u.T
    sim[~valid] = -np.inf
    sim[:, ~valid] = -np.inf
    np.fill_diagonal(sim, -np.inf)
    order = np.sort(sim[valid], axis=1)[:, ::-1]
    assert np.min(order[:, k - 1] - order[:, k]) > 0.05  # separated well beyond bf16's ~2^-7
    np.testing.assert_array_equal(i16[valid], i32[valid])
    # rescored in fp32: values match fp32's, not bf16's (a bf16 similarity is off by ~1e-3)
    np.testing.assert_allclose(s16[valid], s32[valid], atol=2e-6)
    np.testing.assert_allclose(s32[valid], order[:, :k], atol=2e-6)
    for kind in ("degree", "cosine"):
        d32 = np.asarray(knn_density(e, v, k=k, block=128, kind=kind, precision="float32"))
        d16 = np.asarray(knn_density(e, v, k=k, block=128, kind=kind, precision="bfloat16"))
        np.testing.assert_allclose(d16, d32, atol=2e-6)


def test_bf16_knn_without_rescoring_would_differ():
    """The rescoring is what makes the bf16 path exact: bf16 similarities alone are off by more than the
    tolerance the test above holds the bf16 path to."""
    import jax.numpy as jnp
    import numpy as np

    emb = _clustered_pool()
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    lo = np.asarray(jnp.matmul(jnp.asarray(u, jnp.bfloat16), jnp.asarray(u, jnp.bfloat16).T,
                               preferred_element_type=jnp.float32))
    assert np.max(np.abs(lo - u @ u.T)) > 1e-4


def test_knn_precision_auto_is_float32_on_cpu_and_bad_names_fail():
    from boostmis_jax.acquisition.density import resolve_precision

    assert resolve_precision("auto") == "float32"  # the test machine's backend is the CPU
    with pytest.raises(ValueError, match="bfloat16"):
        resolve_precision("fp8")


def test_timing_travels_with_the_checkpointed_book():
    from boostmis_jax.bookkeeping import Book

    book = Book(labeled=[0, 1])
    timer = PhaseTimer(book.timing)
    timer.record("acquisition", 2.5)
    restored = Book.from_json(json.loads(json.dumps(book.to_json())))
    assert restored.timing["acquisition"] == 2.5
    PhaseTimer(restored.timing).record("acquisition", 1.0)  # a resumed run counts on
    assert restored.timing["acquisition"] == 3.5
    assert Book.from_json({"labeled": [0]}).timing == {}  # a checkpoint from before this key


def test_bf16_knn_sharded_over_devices_equals_single_device_fp32():
    """The sharded path (each device's query rows against all keys, inside shard_map) takes the bf16
    shortlist and the rescoring too."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from boostmis_jax import parallel
    from boostmis_jax.acquisition.density import knn_density

    if len(jax.devices()) < 2:
        pytest.skip("needs simulated devices (conftest)")
    emb = _clustered_pool()
    valid = np.ones(len(emb), bool)
    mesh = parallel.make_mesh()
    e, v = parallel.put_global(emb, mesh), parallel.put_global(valid, mesh)
    for kind in ("degree", "cosine"):
        ref = np.asarray(knn_density(jnp.asarray(emb), jnp.asarray(valid), k=7, block=64, kind=kind,
                                     precision="float32"))
        got = knn_density(e, v, k=7, block=64, kind=kind, precision="bfloat16")
        assert len(got.sharding.device_set) == mesh.devices.size
        np.testing.assert_allclose(np.asarray(got), ref, atol=2e-6)


def test_suite_report_prints_the_kept_cpu_side_by_side_from_its_json(capsys, monkeypatch):
    """docs/performance.md's CPU table is printed from the kept JSON lines, ours and the peer's."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("suite_report", root / "benchmarks" / "suite_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    bench = root / "docs" / "results" / "bench"
    monkeypatch.setattr(sys, "argv", ["suite_report.py", str(bench / "train_step_wrn_sidebyside_quiet.jsonl"),
                                      str(bench / "peer_cpu_quiet.jsonl")])
    mod.main()
    out = capsys.readouterr().out.splitlines()
    assert sum(ln.startswith("step wrn28_2 float32: ssl ") for ln in out) == 3
    peer = [ln for ln in out if ln.startswith("peer usb_fixmatch wrn28_2 float32 on cpu x1 (2 threads): ")]
    assert len(peer) == 3 and all("img/s end to end (compute only " in ln for ln in peer)
