"""Multi-host for real: two CPU processes x 2 devices joined by `jax.distributed` (gloo collectives over
TCP on 127.0.0.1) train one global model in ONE shared workdir, and reproduce a single-process 4-device
run: same losses, same test metrics, process 0 alone writing the outputs, orbax checkpointing across both."""
import json
import socket
import subprocess

import numpy as np
import pytest
from helpers import ROOT, TINY, env, main_cmd, read_jsonl

# Same flags as test_train.py so the 4-device reference hits the compile cache.
TINY = [*TINY, "--config.train.steps=20"]
# One acquisition round (pool scoring sharded over both hosts, oracle answers broadcast from process 0).
AL = ["--config.al.cycles=1", "--config.al.chunk=64"]
TIMEOUT = 420


def _gloo_available() -> bool:
    try:
        from jax._src.lib import _jax
    except ImportError:
        try:
            from jax._src.lib import xla_extension as _jax
        except ImportError:
            return False
    return hasattr(_jax, "make_gloo_tcp_collectives")


pytestmark = pytest.mark.skipif(not _gloo_available(), reason="this jaxlib has no gloo CPU collectives")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(devices):
    e = env(devices)
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID"):
        e.pop(k, None)
    return e


def launch(workdir, devices, extra=()):
    cmd = main_cmd(workdir, *TINY, *extra)
    return subprocess.Popen(cmd, cwd=ROOT, env=cli_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_all(procs):
    """Outputs of every process; all are killed if any hangs (a dead peer blocks the others' collectives)."""
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return outs


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """ONE 2-process job (train, test, score the pool, train again) and its 1-process 4-device reference,
    started together; the tests below read what they need."""
    tmp = tmp_path_factory.mktemp("multihost")
    port = free_port()
    procs = [launch(tmp / "multi", 2, [*AL, f"--config.parallel.coordinator_address=127.0.0.1:{port}",
                                        "--config.parallel.num_processes=2", f"--config.parallel.process_id={i}"])
             for i in range(2)]
    procs.append(launch(tmp / "single", 4, AL))
    outs = wait_all(procs)
    return {"multi": tmp / "multi", "single": tmp / "single", "procs": procs, "outs": outs}


def report(pair, i):
    out, err = pair["outs"][i]
    name = ["process 0", "process 1", "single-process reference"][i]
    return f"{name} exited {pair['procs'][i].returncode}:\n{out[-1500:]}\n{err[-3000:]}"


def rows_of(wd, last_step):
    rows = [r for r in read_jsonl(wd / "metrics.jsonl") if r["step"] <= last_step]
    assert len({json.dumps(r, sort_keys=True) for r in rows}) == len(rows), "a row was written twice"
    return rows


def test_two_processes_train_and_test_like_one_process(pair):
    """Cycle 0 (20 steps, evals, test metrics, the checkpoint before acquisition) across two hosts."""
    for i in range(3):
        assert pair["procs"][i].returncode == 0, report(pair, i)
    multi, single = pair["multi"], pair["single"]
    assert "on 4 cpu device(s), 2 process(es)" in pair["outs"][0][0]
    assert "boostmis_jax:" not in pair["outs"][1][0], "process 1 must stay quiet"
    assert "on 4 cpu device(s), 1 process(es)" in pair["outs"][2][0]
    rm, rs = rows_of(multi, 20), rows_of(single, 20)
    loss = [[(r["step"], r["train/loss"]) for r in rows if "train/loss" in r] for rows in (rm, rs)]
    assert [s for s, _ in loss[0]] == [s for s, _ in loss[1]] == [5, 10, 15, 20], report(pair, 0)
    np.testing.assert_allclose([v for _, v in loss[0]], [v for _, v in loss[1]], rtol=1e-4)
    test = [[r for r in rows if "test/macro_f1" in r] for rows in (rm, rs)]
    assert len(test[0]) == len(test[1]) == 1
    for k in ("test/accuracy", "test/macro_f1", "test/auc", "val/macro_f1"):
        np.testing.assert_allclose(test[0][0][k], test[1][0][k], rtol=1e-4, atol=1e-6, err_msg=k)
    # Both processes saved the step-20 checkpoint together (orbax commits once, in the shared workdir).
    assert (multi / "checkpoints" / "20" / "state").is_dir()
    assert (multi / "split.json").read_text() == (single / "split.json").read_text()


def test_two_processes_score_the_pool_like_one_process(pair):
    """Acquisition across hosts: same picks, same second cycle, one summary written by process 0."""
    for i in range(3):
        assert pair["procs"][i].returncode == 0, report(pair, i)
    multi, single = pair["multi"], pair["single"]
    sm = json.loads((multi / "summary.json").read_text())
    ss = json.loads((single / "summary.json").read_text())
    assert (sm["processes"], sm["devices"], ss["processes"], ss["devices"]) == (2, 4, 1, 4)
    assert "scored" in pair["outs"][0][0] and "scored" not in pair["outs"][1][0]
    picks = {name: json.loads((wd / "checkpoints" / str(summ["steps"]) / "meta" / "metadata").read_text())["picks"]
             for name, wd, summ in (("multi", multi, sm), ("single", single, ss))}
    def key(ps):
        return [(p["index"], p["selector"], p["label"]) for p in ps["0"]]

    assert key(picks["multi"]) == key(picks["single"])
    np.testing.assert_allclose([p["score"] for p in picks["multi"]["0"]],
                               [p["score"] for p in picks["single"]["0"]], rtol=1e-4, atol=1e-6)
    assert len(sm["cycles"]) == len(ss["cycles"]) == 2
    assert sm["cycles"][1]["labeled"] == ss["cycles"][1]["labeled"] == 30 + len(picks["multi"]["0"]) > 30
    for cm, cs in zip(sm["cycles"], ss["cycles"]):
        for k in ("accuracy", "macro_f1", "auc"):
            np.testing.assert_allclose(cm["test"][k], cs["test"][k], rtol=1e-4, atol=1e-6, err_msg=k)
    loss = [[r["train/loss"] for r in read_jsonl(wd / "metrics.jsonl") if "train/loss" in r] for wd in (multi, single)]
    np.testing.assert_allclose(loss[0], loss[1], rtol=1e-4)


def test_bad_input_read_by_process_0_stops_every_process(tmp_path):
    """A split file only process 0 reads is broken: both processes exit 2 with one line, none hangs."""
    bad = tmp_path / "split.txt"
    bad.write_text("3\n3\n")  # duplicate index
    port = free_port()
    procs = [launch(tmp_path / "w", 2, [f"--config.parallel.coordinator_address=127.0.0.1:{port}",
                                        "--config.parallel.num_processes=2", f"--config.parallel.process_id={i}",
                                        f"--config.data.split_file={bad}"]) for i in range(2)]
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    assert "split.txt" in outs[0][1] and "Traceback" not in outs[0][1]
    assert "process 0" in outs[1][1] and "Traceback" not in outs[1][1]
