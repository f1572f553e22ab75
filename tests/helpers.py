"""What the end-to-end tests share: the tiny-config flags, running the CLI, reading a run's outputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A tiny demo run (shared by test_train, test_al_loop and test_multihost so they hit the compile cache).
TINY = ["--config.model.widths=(8,16)", "--config.train.batch_size=16", "--config.ssl.uratio=2",
        "--config.train.log_every=5", "--config.train.eval_every=10", "--config.train.eval_batch_size=128",
        "--config.data.num_labels=30"]
# Active-learning cycles on top of TINY.
TINY_AL = ["--config.train.steps=20", "--config.al.steps_per_cycle=10", "--config.al.budget=4",
           "--config.al.chunk=64", "--config.al.knn_block=256"]


def env(devices: int = 1) -> dict:
    e = dict(os.environ)
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    e["JAX_PLATFORMS"] = "cpu"
    e["PYTHONUNBUFFERED"] = "1"
    return e


def main_cmd(workdir, *extra, config: str = "configs/demo.py") -> list[str]:
    return [sys.executable, "-m", "boostmis_jax.main", f"--config={config}", f"--workdir={workdir}", *extra]


def run_cmd(cmd, devices: int = 1, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env(devices), capture_output=True, text=True, timeout=timeout,
                          check=False)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def summary(workdir) -> dict:
    return json.loads((Path(workdir) / "summary.json").read_text())


def error_line(p: subprocess.CompletedProcess) -> str:
    """The last stderr line of a failed run, checking there was no traceback."""
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    return lines[-1]
