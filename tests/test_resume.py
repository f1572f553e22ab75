"""Resume under a changed config: refused by name (with the ways on), allowed for cadence keys, and a
finished run extended on purpose with more al.cycles continues with the next acquisition."""
import json
import shutil

import numpy as np
import pytest
from helpers import TINY, TINY_AL, error_line, main_cmd, run_cmd, summary


def cli(wd, *extra):
    return main_cmd(wd, *TINY, *TINY_AL, "--config.al.cycles=1", *extra)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    wd = tmp_path_factory.mktemp("finished")
    p = run_cmd(cli(wd))
    assert p.returncode == 0, p.stderr[-3000:]
    return wd


@pytest.mark.parametrize("override,key", [("--config.seed=1", "seed"),
                                          ("--config.model.widths=(8,32)", "model.widths"),
                                          ("--config.train.batch_size=8", "train.batch_size"),
                                          ("--config.ssl.threshold=fixed", "ssl.threshold"),
                                          ("--config.al.steps_per_cycle=20", "al.steps_per_cycle")])
def test_changed_result_key_is_refused_by_name(finished, tmp_path, override, key):
    wd = tmp_path / "w"
    shutil.copytree(finished, wd)
    before = (wd / "summary.json").read_bytes()
    line = error_line(run_cmd(cli(wd, override)))
    assert key in line and "new --workdir" in line and "->" in line
    assert (wd / "summary.json").read_bytes() == before


def test_cadence_keys_may_change_and_fewer_cycles_are_refused(finished, tmp_path):
    wd = tmp_path / "w"
    shutil.copytree(finished, wd)
    p = run_cmd(cli(wd, "--config.train.log_every=2", "--config.checkpoint.keep=5"))
    assert p.returncode == 0 and "resuming from step" in p.stdout, p.stderr[-2000:]
    assert "al.cycles" in error_line(run_cmd(cli(wd, "--config.al.cycles=0")))


def test_other_data_with_the_same_shapes_is_refused(finished, tmp_path):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)[..., None]
    rng = np.random.default_rng(0)
    f = tmp_path / "other.npz"
    n = len(x)
    idx = rng.permutation(n)
    np.savez(f, train_images=x[idx[:1000]], train_labels=d.target[idx[:1000]][:, None],
             val_images=x[idx[1000:1200]], val_labels=d.target[idx[1000:1200]][:, None],
             test_images=x[idx[1200:]], test_labels=d.target[idx[1200:]][:, None])
    wd = tmp_path / "w"
    p = run_cmd(main_cmd(wd, *TINY, "--config.train.steps=10", "--config.data.source=medmnist_npz",
                         f"--config.data.path={f}"))
    assert p.returncode == 0, p.stderr[-2000:]
    np.savez(f, train_images=255 - x[idx[:1000]], train_labels=d.target[idx[:1000]][:, None],
             val_images=x[idx[1000:1200]], val_labels=d.target[idx[1000:1200]][:, None],
             test_images=x[idx[1200:]], test_labels=d.target[idx[1200:]][:, None])
    line = error_line(run_cmd(main_cmd(wd, *TINY, "--config.train.steps=10", "--config.data.source=medmnist_npz",
                                       f"--config.data.path={f}")))
    assert "data differs" in line and "fingerprint" in line


def test_more_cycles_on_a_finished_run_extend_it(finished, tmp_path):
    wd = tmp_path / "w"
    shutil.copytree(finished, wd)
    before = summary(wd)
    p = run_cmd(cli(wd, "--config.al.cycles=2"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "extending the finished run" in p.stdout
    after = summary(wd)
    assert [c["labeled"] for c in after["cycles"]] == [30, 38, 46]
    # the finished cycles are unchanged; the last one now also records the round picked after it
    def strip(cs):
        return [{k: v for k, v in c.items() if k != "acquisition"} for c in cs]

    assert strip(after["cycles"][:2]) == strip(before["cycles"][:2]) and "acquisition" in after["cycles"][1]
    assert before["cycles"][0]["acquisition"] == after["cycles"][0]["acquisition"]
    assert after["config"]["al"]["cycles"] == 2 and after["steps"] == before["steps"] + 10
    assert json.loads((wd / "summary.json").read_text())["n_active"] == 16
