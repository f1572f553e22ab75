"""Data parallelism: the real SSL train step gives the same numbers on 1 and 8 devices (gradients, params,
BatchNorm statistics, the BoostMIS threshold memory and tau, losses), the placement helpers behave, and the
CLI's metrics do not depend on the device count."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from boostmis_jax import parallel
from boostmis_jax.defaults import get_config
from boostmis_jax.errors import UserError
from boostmis_jax.models import build_model
from boostmis_jax.sampling import rows_for_step
from boostmis_jax.train import build_training

ROOT = Path(__file__).resolve().parents[1]
RTOL, ATOL = 1e-4, 1e-5
N_STEPS = 5
B, URATIO, C = 16, 2, 10

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices; see conftest.py")


# ------------------------------------------------------------------------------------------------------
# The real train step on 1 vs 8 devices
# ------------------------------------------------------------------------------------------------------
def tiny_config():
    cfg = get_config()
    cfg.model.widths = (4, 8)
    cfg.train.batch_size = B
    cfg.ssl.uratio = URATIO
    cfg.train.steps = 20
    cfg.aug.flip = False
    cfg.aug.num_ops = 0  # RandAugment compiles slowly; the CLI test below runs it on 1 vs 4 devices
    # A low threshold so pseudo-labels are actually accepted from a random init: the memory, C_t and tau
    # then change every step, and the consistency loss contributes to the gradients being compared.
    cfg.ssl.a = 0.15
    cfg.ssl.tau_min = 0.1
    cfg.ssl.status_conf = 0.3   # C_t non-zero from a random init, and a window that fills within 5 steps
    cfg.ssl.status_window = 2
    return cfg


def digits_like(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), rng.integers(0, C, n).astype(np.int32)


def run_steps(devices, n_steps=N_STEPS):
    """n_steps of the jitted step on a mesh over `devices`; host copies of what we compare."""
    cfg = tiny_config()
    x, y = digits_like()
    labeled, unlabeled = np.arange(24), np.arange(24, len(x))
    model = build_model(cfg.model, C)
    training = build_training(cfg, model, kind="image", mean=(0.5,), std=(0.25,), num_train=len(x),
                              num_classes=C)
    mesh = parallel.make_mesh(devices)
    rep = parallel.replicated(mesh)
    state = jax.jit(lambda: training.init(jnp.zeros((1, 8, 8, 1))), out_shardings=rep)()
    step = jax.jit(training.step, out_shardings=(rep, rep))

    def make_batch(s):
        il = rows_for_step(labeled, B, s, seed=0, cycle=0, stream=0)
        iu = rows_for_step(unlabeled, URATIO * B, s, seed=0, cycle=0, stream=1)
        return {"xl": x[il], "yl": y[il], "xu": x[iu], "iu": iu.astype(np.int32), "yu": y[iu]}

    out = {"params0": jax.device_get(state["params"]), "metrics": [], "shards": None}
    for s, batch in parallel.prefetch(make_batch, range(n_steps), mesh):
        if out["shards"] is None:
            out["shards"] = (len(batch["xu"].sharding.device_set), batch["xu"].sharding.shard_shape((URATIO * B,)))
        state, m = step(state, batch)
        out["metrics"].append(jax.device_get(m))
        if s == 0:
            out["step1"] = jax.device_get({k: state[k] for k in ("params", "batch_stats", "ssl")})
    out["final"] = jax.device_get({k: state[k] for k in ("params", "batch_stats", "ssl", "ema_params", "step")})
    return out


@pytest.fixture(scope="module")
def one_vs_eight():
    return run_steps(jax.devices()[:1]), run_steps(jax.devices()[:8])


def assert_trees_close(a, b, what):
    la, ta = jax.tree_util.tree_flatten_with_path(a)
    lb, tb = jax.tree_util.tree_flatten_with_path(b)
    assert ta == tb, what
    for (path, u), (_, v) in zip(la, lb):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=RTOL, atol=ATOL,
                                   err_msg=f"{what} {jax.tree_util.keystr(path)}")


def test_batches_really_are_split_over_eight_devices(one_vs_eight):
    one, eight = one_vs_eight
    assert one["shards"] == (1, (URATIO * B,))
    assert eight["shards"] == (8, (URATIO * B // 8,))


def test_first_update_and_gradients_match(one_vs_eight):
    one, eight = one_vs_eight
    # Same init, so equal params after one SGD step means equal gradients (lr and decay are shared).
    assert_trees_close(one["params0"], eight["params0"], "init params")
    np.testing.assert_allclose(one["metrics"][0]["grad_norm"], eight["metrics"][0]["grad_norm"], rtol=RTOL)

    def delta(o):
        return jax.tree.map(lambda p1, p0: p1 - p0, o["step1"]["params"], o["params0"])

    assert_trees_close(delta(one), delta(eight), "first update")
    assert max(float(np.abs(d).max()) for d in jax.tree.leaves(delta(one))) > 1e-4  # the step did move
    assert_trees_close(one["step1"]["params"], eight["step1"]["params"], "params after 1 step")


def test_batchnorm_statistics_are_global(one_vs_eight):
    # Per-device BN would average 8 shard means/vars -- equal means, different variances -- and differ here.
    one, eight = one_vs_eight
    assert_trees_close(one["step1"]["batch_stats"], eight["step1"]["batch_stats"], "batch_stats after 1 step")
    assert_trees_close(one["final"]["batch_stats"], eight["final"]["batch_stats"], "batch_stats final")


def test_threshold_memory_and_tau_match(one_vs_eight):
    one, eight = one_vs_eight
    for key in ("step1", "final"):
        t1, t8 = one[key]["ssl"]["thr"], eight[key]["ssl"]["thr"]
        for k in ("conf_ring", "seen_ring", "steps"):
            np.testing.assert_array_equal(t1[k], t8[k])
        np.testing.assert_allclose(t1["status"], t8["status"], rtol=RTOL)
    assert float(one["final"]["ssl"]["thr"]["conf_ring"].sum()) > 0, "no confident sample: vacuous"
    m1 = [float(m["mask_rate"]) for m in one["metrics"]]
    m8 = [float(m["mask_rate"]) for m in eight["metrics"]]
    np.testing.assert_allclose(m1, m8, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose([float(m["threshold"]) for m in one["metrics"]],
                               [float(m["threshold"]) for m in eight["metrics"]], rtol=RTOL)


def test_first_five_losses_and_final_state_match(one_vs_eight):
    one, eight = one_vs_eight
    for k in ("loss", "sup_loss", "unsup_loss", "pseudo_acc"):
        np.testing.assert_allclose([float(m[k]) for m in one["metrics"]], [float(m[k]) for m in eight["metrics"]],
                                   rtol=RTOL, atol=ATOL, err_msg=k)
    assert len(one["metrics"]) == N_STEPS and int(one["final"]["step"]) == int(eight["final"]["step"]) == N_STEPS
    assert_trees_close(one["final"]["params"], eight["final"]["params"], "params after 5 steps")
    assert_trees_close(one["final"]["ema_params"], eight["final"]["ema_params"], "ema params after 5 steps")


# ------------------------------------------------------------------------------------------------------
# Placement helpers
# ------------------------------------------------------------------------------------------------------
def test_make_mesh_defaults_to_all_devices_and_takes_a_list():
    assert parallel.make_mesh().devices.size == jax.device_count()
    assert parallel.make_mesh(jax.devices()[:2]).devices.tolist() == jax.devices()[:2]
    assert parallel.make_mesh().axis_names == ("data",)
    with pytest.raises(UserError, match="no devices"):
        parallel.make_mesh([])


def test_indivisible_batch_is_a_user_error():
    mesh = parallel.make_mesh(jax.devices()[:8])
    cfg = tiny_config()
    cfg.train.batch_size = 12
    with pytest.raises(UserError, match=r"train.batch_size=12 is not a multiple of the 8 devices.*multiple of 8"):
        parallel.check_divisible("train.batch_size", int(cfg.train.batch_size), mesh)
    parallel.check_divisible("train.batch_size", 16, mesh)
    parallel.check_divisible("train.batch_size", 12, parallel.make_mesh(jax.devices()[:1]))
    with pytest.raises(UserError, match="multiple of the 8 devices"):
        parallel.put_global({"x": np.zeros((12, 3))}, mesh)


def test_put_global_with_pad_rows_round_trips_and_masks():
    mesh = parallel.make_mesh(jax.devices()[:8])
    x = np.arange(13 * 3, dtype=np.float32).reshape(13, 3)
    xp, mask = parallel.pad_rows(x, 8)
    assert xp.shape == (16, 3) and mask.tolist() == [True] * 13 + [False] * 3
    assert not xp[13:].any()
    same, m2 = parallel.pad_rows(x[:8], 8)
    assert same.shape == (8, 3) and m2.all()
    tree = parallel.put_global({"x": xp, "mask": mask, "scale": np.float32(2.0)}, mesh)
    assert tree["x"].sharding.shard_shape(tree["x"].shape) == (2, 3)
    assert len(tree["x"].sharding.device_set) == 8
    assert tree["scale"].sharding.is_fully_replicated
    np.testing.assert_array_equal(parallel.to_host(tree["x"]), xp)
    total, count = jax.jit(lambda t: (t["scale"] * jnp.sum(t["x"] * t["mask"][:, None]), jnp.sum(t["mask"])),
                           out_shardings=parallel.replicated(mesh))(tree)
    np.testing.assert_allclose(float(total), 2.0 * x.sum())
    assert int(count) == 13
    assert parallel.process_slice(16, mesh) == slice(0, 16)


def test_prefetch_yields_every_step_in_order_with_bounded_lookahead():
    mesh = parallel.make_mesh(jax.devices()[:8])
    made = []

    def make_batch(s):
        made.append(s)
        return {"x": np.full((8, 2), s, np.int32)}

    seen = []
    for s, batch in parallel.prefetch(make_batch, range(3, 10), mesh, depth=2):
        assert max(made) <= s + 1, "prefetch ran ahead of its depth"
        assert int(parallel.to_host(batch["x"])[0, 0]) == s
        seen.append(s)
    assert seen == list(range(3, 10)) and made == list(range(3, 10))
    assert list(parallel.prefetch(make_batch, range(0), mesh)) == []


# ------------------------------------------------------------------------------------------------------
# End to end: the CLI on 1 and 4 devices logs the same losses
# ------------------------------------------------------------------------------------------------------
# Same flags as tests/test_train.py so the session's persistent compilation cache is shared.
TINY = ["--config.model.widths=(8,16)", "--config.train.batch_size=16", "--config.ssl.uratio=2",
        "--config.train.log_every=5", "--config.train.eval_every=10", "--config.train.eval_batch_size=128",
        "--config.data.num_labels=30", "--config.train.steps=20"]


def cli_env(devices):
    e = dict(os.environ)
    e.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             PYTHONUNBUFFERED="1")
    return e


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_cli_losses_do_not_depend_on_device_count(tmp_path):
    procs = {}
    for n in (1, 4):  # concurrently: two cores, two mostly single-threaded compiles
        cmd = [sys.executable, "-m", "boostmis_jax.main", "--config=configs/demo.py", f"--workdir={tmp_path / str(n)}",
               *TINY]
        procs[n] = subprocess.Popen(cmd, cwd=ROOT, env=cli_env(n), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
    outs = {}
    try:
        for n, p in procs.items():
            outs[n] = p.communicate(timeout=600)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for n, p in procs.items():
        assert p.returncode == 0, f"{n} device(s):\n{outs[n][1][-3000:]}"
    assert "on 4 cpu device(s), 1 process(es)" in outs[4][0]
    assert "on 1 cpu device(s)" in outs[1][0]
    rows = {n: read_jsonl(tmp_path / str(n) / "metrics.jsonl") for n in procs}
    loss = {n: [(r["step"], r["train/loss"]) for r in rows[n] if "train/loss" in r] for n in procs}
    assert [s for s, _ in loss[1]] == [5, 10, 15, 20] == [s for s, _ in loss[4]]
    np.testing.assert_allclose([v for _, v in loss[4]], [v for _, v in loss[1]], rtol=1e-4)
    summ = {n: json.loads((tmp_path / str(n) / "summary.json").read_text()) for n in procs}
    assert summ[4]["devices"] == 4 and summ[1]["devices"] == 1
    np.testing.assert_allclose(summ[4]["test"]["auc"], summ[1]["test"]["auc"], rtol=1e-3)
    assert abs(summ[4]["test"]["accuracy"] - summ[1]["test"]["accuracy"]) <= 2.5 / summ[1]["test"]["num_examples"]
