"""The self-supervised stage: NT-Xent against a brute-force reference, the embedding diagnostics, the step
identical on 1 and 4 devices, and through the CLI as a phase of the run: logs and plot, exact resume after
SIGKILL inside the stage, and selfsup.init (off: training is the run without the stage)."""
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ROOT, TINY, env, error_line, main_cmd, read_jsonl, run_cmd, summary

from boostmis_jax import parallel, selfsup
from boostmis_jax.defaults import get_config
from boostmis_jax.models import build_model


def test_nt_xent_matches_brute_force():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(2, 6, 5)).astype(np.float32)
    t = 0.3
    loss, top1 = selfsup.nt_xent(jnp.asarray(z1), jnp.asarray(z2), t)
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n, terms, hits = len(z), [], 0
    for i in range(n):
        j = (i + 6) % n
        others = [k for k in range(n) if k != i]
        logits = np.array([z[i] @ z[k] / t for k in others])
        terms.append(-(z[i] @ z[j] / t - np.log(np.sum(np.exp(logits)))))
        hits += others[int(np.argmax(logits))] == j
    np.testing.assert_allclose(float(loss), np.mean(terms), rtol=1e-5)
    assert float(top1) == hits / n
    # two identical, well-separated views: the positive is always found
    e = np.eye(6, dtype=np.float32)
    _, top1 = selfsup.nt_xent(jnp.asarray(e), jnp.asarray(e), 0.1)
    assert float(top1) == 1.0


def test_diagnostics_tell_a_collapse_from_a_spread():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(256, 16)).astype(np.float32)
    line = np.outer(rng.normal(size=256), rng.normal(size=16)).astype(np.float32)
    assert float(selfsup.effective_rank(jnp.asarray(spread))) > 12
    assert float(selfsup.effective_rank(jnp.asarray(line))) < 1.1
    same = np.tile(spread[:1], (64, 1))
    assert float(selfsup.uniformity(jnp.asarray(same))) == pytest.approx(0.0, abs=1e-6)
    assert float(selfsup.uniformity(jnp.asarray(spread))) < -1.5


def _step_on(n_devices: int):
    cfg = get_config()
    cfg.model.widths = (8, 16)
    cfg.selfsup.steps = 10
    model = build_model(cfg.model, 10)
    sample = jnp.zeros((1, 8, 8, 1), jnp.float32)
    head = selfsup.make_head(cfg, model, sample)
    tx, schedule = selfsup.make_optimizer(cfg.selfsup)
    mesh = parallel.make_mesh(jax.devices()[:n_devices])
    rep = parallel.replicated(mesh)
    ss = jax.device_put(selfsup.init_selfsup(model, head, tx, sample, 0), rep)
    step = jax.jit(selfsup.make_selfsup_step(model, head, tx, schedule, aug=cfg.aug, kind="image",
                                             mean=np.full(1, 0.3), std=np.full(1, 0.3), seed=0,
                                             temperature=0.1), out_shardings=(rep, rep))
    x = np.random.default_rng(1).integers(0, 256, size=(16, 8, 8, 1)).astype(np.uint8)
    metrics = []
    for _ in range(3):
        ss, m = step(ss, parallel.put_global({"x": x}, mesh))
        metrics.append(jax.device_get(m))
    return jax.device_get(ss), metrics


def test_step_is_the_same_on_one_and_four_devices():
    a, ma = _step_on(1)
    b, mb = _step_on(4)
    assert int(a["step"]) == int(b["step"]) == 3
    for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"]), strict=True):
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5)
    for x, y in zip(ma, mb, strict=True):
        np.testing.assert_allclose(x["loss"], y["loss"], rtol=1e-4)
    assert all(np.isfinite(m["loss"]) and m["loss"] > 0 for m in ma)


SS = ["--config.selfsup.steps=30", "--config.selfsup.batch_size=32", "--config.checkpoint.every_steps=10",
      "--config.selfsup.init=True"]


def cli(wd, *extra):
    return main_cmd(wd, "--config.train.steps=20", *TINY, *extra)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    wd = tmp_path_factory.mktemp("selfsup_straight")
    p = run_cmd(cli(wd, *SS))
    assert p.returncode == 0, p.stderr[-3000:]
    return wd


def test_stage_logs_and_plots(straight):
    rows = read_jsonl(straight / "metrics.jsonl")
    ss = [r for r in rows if "selfsup/loss" in r]
    assert [r["selfsup/step"] for r in ss] == [5, 10, 15, 20, 25, 30]
    assert [r["step"] for r in ss] == [-25, -20, -15, -10, -5, 0]  # before training's step 0
    for k in ("selfsup/effective_rank", "selfsup/uniformity", "selfsup/alignment", "selfsup/top1"):
        assert all(np.isfinite(r[k]) for r in ss)
    assert (straight / "selfsup.png").stat().st_size > 1000
    s = summary(straight)
    assert s["labeled"] == 30 and s["steps"] == 20
    assert [r["step"] for r in rows if "train/loss" in r] == [5, 10, 15, 20]


def test_sigkill_in_the_stage_resumes_exactly(straight, tmp_path):
    wd = tmp_path / "killed"
    cmd = cli(wd, *SS)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ck, t0 = wd / "checkpoints", time.time()
    while time.time() - t0 < 300:
        done = [d for d in ck.glob("*") if d.name.isdigit() and (d / "commit_success.txt").exists()] \
            if ck.exists() else []
        if done or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = sorted(int(d.name) for d in ck.glob("*") if d.name.isdigit())
    assert steps and max(steps) < 30, f"not killed inside the stage: checkpoints {steps}"
    p = run_cmd(cmd)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "phase selfsup" in p.stdout
    a, b = read_jsonl(straight / "metrics.jsonl"), read_jsonl(wd / "metrics.jsonl")
    drop = lambda rows: [{k: v for k, v in r.items() if not k.startswith("perf")} for r in rows]
    assert [r["step"] for r in b] == [r["step"] for r in a]   # nothing logged twice
    assert drop(a) == drop(b)
    assert summary(straight)["test"] == summary(wd)["test"]


def test_init_hands_the_backbone_over_and_without_it_training_is_the_plain_run(straight, tmp_path):
    off = run_cmd(cli(tmp_path / "off", *SS[:-1], "--config.selfsup.init=False"))
    plain = run_cmd(cli(tmp_path / "plain"))
    assert off.returncode == 0 and plain.returncode == 0, off.stderr[-2000:] + plain.stderr[-2000:]
    loss = lambda wd: [r["train/loss"] for r in read_jsonl(wd / "metrics.jsonl") if "train/loss" in r]
    assert loss(tmp_path / "off") == loss(tmp_path / "plain")
    assert loss(straight)[0] != loss(tmp_path / "plain")[0]     # init=True: another starting point
    assert summary(tmp_path / "off")["test"] == summary(tmp_path / "plain")["test"]


def test_bad_selfsup_values_are_one_line(tmp_path):
    assert "selfsup.temperature" in error_line(run_cmd(cli(tmp_path / "a", "--config.selfsup.temperature=0")))
    line = error_line(run_cmd(cli(tmp_path / "b", *SS, "--config.selfsup.batch_size=0")))
    assert "selfsup.batch_size" in line
