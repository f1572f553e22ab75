"""Issue 8: every filesystem fault and config-file mistake is one line (exit 2, no traceback), the workdir
is locked against a second run, a failed checkpoint save leaves the earlier ones, and the error is the last
line on stderr. CLI level where a user meets it; in process where the fault must be simulated."""
from __future__ import annotations

import collections
import errno
import fcntl
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ROOT, TINY, env, error_line, main_cmd, run_cmd

from boostmis_jax import checkpointing, workdir
from boostmis_jax.errors import UserError
from boostmis_jax.main import _workdir_fault, check_against_defaults


def cli(wd, *extra, steps=10, config="configs/demo.py"):
    return main_cmd(wd, f"--config.train.steps={steps}", *TINY, *extra, config=config)


def config_file(tmp_path, body: str, name="my_config.py") -> Path:
    """A config file the way users write one: defaults, then their lines."""
    f = tmp_path / name
    lines = "\n".join("    " + ln for ln in body.strip().splitlines())
    f.write_text("import ml_collections\nfrom boostmis_jax.defaults import get_config as _defaults\n\n\n"
                 f"def get_config():\n    c = _defaults()\n{lines}\n    return c\n")
    return f


# ======================================================================================================
# The workdir: a file in the way, no permission, read-only, full, one line each and nothing left behind
# ======================================================================================================
def test_workdir_that_is_a_file_is_one_line(tmp_path):
    f = tmp_path / "run"
    f.write_text("my notes")
    line = error_line(run_cmd(cli(f)))
    assert str(f) in line and "is a file" in line
    assert f.read_text() == "my notes"


def test_workdir_under_a_file_is_one_line_naming_the_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    line = error_line(run_cmd(cli(f / "sub" / "run")))
    assert f"{f} is a file" in line and "another --workdir" in line


def test_prepare_neighbours_of_a_file_in_the_way(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "checkpoints").write_text("")  # where the checkpoints go
    with pytest.raises(UserError, match="checkpoints is a file"):
        workdir.prepare(tmp_path / "w")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match="broken symlink"):
        workdir.prepare(tmp_path / "dangling")
    (tmp_path / "deep").write_text("")
    with pytest.raises(UserError, match=f"{tmp_path / 'deep'} is a file"):
        workdir.prepare(tmp_path / "deep" / "a" / "b" / "c")


def test_read_only_workdir_is_one_line(tmp_path, monkeypatch):
    """Root (CI) ignores permission bits, so the read-only answer of os.access is simulated."""
    wd = tmp_path / "ro"
    wd.mkdir()
    real = os.access
    monkeypatch.setattr(workdir.os, "access", lambda p, mode: False if Path(p) == wd else real(p, mode))
    with pytest.raises(UserError, match=f"--workdir {wd} is not writable.*chmod u\\+w"):
        workdir.prepare(wd)
    assert not (wd / workdir.LOCK_NAME).exists()


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_lock_file_that_cannot_be_created_is_one_line(tmp_path, monkeypatch, code):
    """What root meets on a read-only filesystem: the first write (the lock file) fails."""
    real = os.open

    def refuse(path, flags, *a):
        if str(path).endswith(workdir.LOCK_NAME):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, flags, *a)

    monkeypatch.setattr(workdir.os, "open", refuse)
    with pytest.raises(UserError, match=f"--workdir {tmp_path} is not writable"):
        workdir.prepare(tmp_path)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_workdir_that_cannot_be_created_is_one_line(tmp_path, monkeypatch, code):
    def refuse(self, *a, **k):
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(workdir.Path, "mkdir", refuse)
    with pytest.raises(UserError, match=f"cannot create --workdir {tmp_path / 'new'} in {tmp_path}: "
                                        f"{os.strerror(code)}"):
        workdir.prepare(tmp_path / "new")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_parent_is_one_line_for_a_real_user(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        line = error_line(run_cmd(cli(ro / "run")))
        assert str(ro / "run") in line and "Permission denied" in line
    finally:
        ro.chmod(0o700)


def _ckpt_folder(wd: Path, step: int, size: int) -> None:
    d = wd / "checkpoints" / str(step)
    d.mkdir(parents=True)
    (d / "state").write_bytes(b"\0" * size)


def test_not_enough_space_for_a_checkpoint_is_one_line(tmp_path, monkeypatch):
    _ckpt_folder(tmp_path, 7, 2 * workdir.MB)
    (tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp").mkdir()  # a partial save is no checkpoint
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(workdir.shutil, "disk_usage", lambda p: usage(10 * workdir.MB, 0, workdir.MB // 2))
    with pytest.raises(UserError) as e:
        workdir.prepare(tmp_path)
    msg = str(e.value)
    assert "0.5 MB free" in msg and "needs about 2.0 MB (checkpoint 7" in msg and str(tmp_path) in msg
    monkeypatch.setattr(workdir.shutil, "disk_usage", lambda p: usage(10 * workdir.MB, 0, 3 * workdir.MB))
    workdir.prepare(tmp_path).release()  # the refusal released its lock; with room it goes on


def test_free_space_is_not_guessed_without_a_checkpoint(tmp_path, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(workdir.shutil, "disk_usage", lambda p: usage(1, 1, 0))
    workdir.prepare(tmp_path / "fresh").release()


def test_workdir_fault_in_main_is_one_line_only_for_the_workdir(tmp_path):
    wd = tmp_path / "w"
    full = OSError(errno.ENOSPC, "No space left on device", str(wd / "metrics.jsonl"))
    line = _workdir_fault(full, str(wd))
    assert "metrics.jsonl" in line and "No space left" in line and "\n" not in line
    assert _workdir_fault(OSError(errno.EACCES, "Permission denied", "/etc/elsewhere"), str(wd)) is None
    assert _workdir_fault(OSError(errno.ECONNREFUSED, "refused"), str(wd)) is None  # a bug keeps its traceback


# ======================================================================================================
# The lock: a second run refuses at once with the pid, a killed run's lock does not block
# ======================================================================================================
HOLDER = ("import fcntl, os, sys, time\n"
          "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
          "fcntl.flock(fd, fcntl.LOCK_EX)\n"
          "os.write(fd, f'{os.getpid()} {os.uname().nodename}'.encode())\n"
          "print('locked', flush=True)\n"
          "time.sleep(600)\n")


def test_lock_refuses_a_second_holder_and_a_killed_holder_does_not_block(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / workdir.LOCK_NAME)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"another run \\(pid {holder.pid}\\) is using {tmp_path}; wait"):
            workdir.prepare(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = workdir.prepare(tmp_path)  # the kernel dropped the dead run's flock: no stale lock
    assert lock.held
    assert (tmp_path / workdir.LOCK_NAME).read_text().split()[0] == str(os.getpid())
    with pytest.raises(UserError, match=f"pid {os.getpid()}"):
        workdir.prepare(tmp_path)  # same process, second run: refused too
    lock.release()
    workdir.prepare(tmp_path).release()


def test_early_probe_refuses_a_held_workdir_and_creates_nothing(tmp_path):
    workdir.refuse_if_busy(tmp_path / "none")  # no workdir yet: nothing to wait for
    assert not (tmp_path / "none").exists()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / workdir.LOCK_NAME)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"another run \\(pid {holder.pid}\\) is using {tmp_path}"):
            workdir.refuse_if_busy(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    workdir.refuse_if_busy(tmp_path)
    workdir.prepare(tmp_path).release()  # the probe held nothing


def test_lock_names_another_host(tmp_path):
    (tmp_path / workdir.LOCK_NAME).write_text("4242 some-other-node\n")
    fd = os.open(tmp_path / workdir.LOCK_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(UserError, match="pid 4242 on host some-other-node"):
            workdir.prepare(tmp_path)
    finally:
        os.close(fd)


def test_only_process_0_locks(tmp_path):
    first = workdir.prepare(tmp_path)
    other = workdir.prepare(tmp_path, lock=False)  # another process of the same multi-process run
    assert first.held and not other.held
    other.release()
    first.release()


def test_second_cli_run_on_a_workdir_refuses_and_a_killed_run_leaves_no_stale_lock(tmp_path):
    wd = tmp_path / "shared"
    first = subprocess.Popen(cli(wd, "--config.checkpoint.every_steps=1000", steps=400), cwd=ROOT, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        lock = wd / workdir.LOCK_NAME
        while time.time() - t0 < 300 and first.poll() is None:
            if lock.exists() and lock.read_text().split()[:1] == [str(first.pid)]:
                break
            time.sleep(0.1)
        assert first.poll() is None, "the first run ended before holding the lock"
        second = run_cmd(cli(wd))
        assert f"another run (pid {first.pid}) is using {wd}" in error_line(second)
        assert "boostmis_jax:" not in second.stdout  # refused at once, before loading the data
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    third = run_cmd(cli(wd, steps=5))
    assert third.returncode == 0, third.stderr[-2000:]
    assert (wd / "summary.json").exists()


# ======================================================================================================
# No empty workdir behind a config error; an existing workdir is never removed
# ======================================================================================================
def test_prepare_then_release_removes_only_what_it_created_and_left_empty(tmp_path):
    new = tmp_path / "a" / "b" / "run"
    workdir.prepare(new).release()
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()
    workdir.prepare(tmp_path / "kept").release()
    assert (tmp_path / "kept").is_dir()
    lock = workdir.prepare(tmp_path / "written")
    (tmp_path / "written" / "metrics.jsonl").write_text("{}\n")
    lock.release()
    assert (tmp_path / "written" / "metrics.jsonl").exists()


@pytest.mark.parametrize("flag", ["--config.model.dtype=float16x", "--config.train.lr=-1",
                                  "--config.checkpoint.keep=0"])
def test_bad_values_are_one_line_naming_the_key_and_leave_no_workdir(tmp_path, flag):
    key = flag.split("=")[0].removeprefix("--config.")
    line = error_line(run_cmd(cli(tmp_path / "a" / "run", flag)))
    assert key in line
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("key, value", [("train.lr", 0.0), ("checkpoint.keep", -1), ("model.dtype", "int8"),
                                        ("train.lr", float("nan")), ("train.steps", 0)])
def test_bad_value_neighbours_are_refused_by_name(key, value):
    from boostmis_jax.defaults import get_config, validate

    cfg = get_config()
    section, leaf = key.split(".")
    with cfg.unlocked():
        cfg[section][leaf] = value
    with pytest.raises(UserError, match=key.replace(".", "\\.")):
        validate(cfg)


def test_config_error_found_after_the_data_loads_leaves_no_workdir(tmp_path):
    """The batch is checked against the 8 devices only once the mesh exists, after the data loaded."""
    line = error_line(run_cmd(cli(tmp_path / "a" / "run", "--config.train.batch_size=12"), devices=8))
    assert "train.batch_size" in line
    assert not (tmp_path / "a").exists()


def test_error_in_the_first_restore_leaves_no_workdir(tmp_path):
    """A split file is read after the workdir is made (resume reads the workdir's own split first)."""
    missing = tmp_path / "no_such_split.json"
    line = error_line(run_cmd(cli(tmp_path / "a" / "run", f"--config.data.split_file={missing}")))
    assert "no_such_split.json" in line
    assert not (tmp_path / "a").exists()


# ======================================================================================================
# The config file: unknown keys and wrong types are one line naming the key
# ======================================================================================================
def test_unknown_key_in_a_config_file_is_one_line(tmp_path):
    f = config_file(tmp_path, "c.train.stepz = 5")
    line = error_line(run_cmd(main_cmd(tmp_path / "w", config=str(f))))
    assert "train.stepz" in line and "did you mean train.steps" in line and str(f) in line
    assert not (tmp_path / "w").exists()


def test_unknown_keys_neighbours(tmp_path):
    def load(body):
        f = config_file(tmp_path, body, name=f"c{abs(hash(body))}.py")
        spec = importlib.util.spec_from_file_location(f.stem, f)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.get_config(), str(f)

    with pytest.raises(UserError, match="unknown keys al.budgte .*, extra.x"):
        check_against_defaults(*load("c.al.budgte = 3\nc.extra = ml_collections.ConfigDict({'x': 1})"))
    with pytest.raises(UserError, match="lacks key train.ema_decay; build it on"):
        check_against_defaults(*load("del c.train['ema_decay']"))
    with pytest.raises(UserError, match=r"config train.steps='ten' \(set in .*\) has type str, expected int"):
        check_against_defaults(*load("c.train = ml_collections.ConfigDict({**_defaults().train, 'steps': 'ten'})"))
    with pytest.raises(UserError, match="config train.steps=True .* has type bool, expected int"):
        check_against_defaults(*load("c.train.steps = True"))
    with pytest.raises(UserError, match="config train.lr=None"):
        check_against_defaults(*load("c.train.lr = None"))
    check_against_defaults(*load("c.train.lr = 1\nc.model.widths = [8, 16]\nc.al.vat_eps = 2.0"))  # allowed


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.py")))
def test_shipped_configs_match_the_defaults(name):
    spec = importlib.util.spec_from_file_location(name[:-3], ROOT / "configs" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config()
    if "study" in cfg:  # a study config is a run config plus its `study` section (boostmis_jax.study)
        with pytest.raises(UserError, match="is a study config .* python -m boostmis_jax.study"):
            check_against_defaults(cfg, name)
        from boostmis_jax.study import run_base
        cfg = run_base(cfg)
    check_against_defaults(cfg, name)


@pytest.mark.parametrize("body, shown", [
    ('c.train.steps = "ten"', 'line 7 (`c.train.steps = "ten"`)'),
    ("c.trian.steps = 4", 'Did you mean "train"'),
    ("c.train.steps = undefined_name", "name 'undefined_name' is not defined"),
    ("c.train.steps = (", "line 7"),
])
def test_error_raised_by_a_config_file_is_one_line_naming_its_line(tmp_path, body, shown):
    f = config_file(tmp_path, body)
    line = error_line(run_cmd(main_cmd(tmp_path / "w", config=str(f))))
    assert str(f) in line and shown in line, line


# ======================================================================================================
# A failed checkpoint save: one line, the earlier checkpoints intact
# ======================================================================================================
def _state(v: float) -> dict:
    return {"w": jnp.full((4,), v), "step": jnp.asarray(int(v))}


def test_full_disk_during_a_save_is_one_line_and_earlier_checkpoints_restore(tmp_path, monkeypatch):
    ck = checkpointing.Checkpointer(tmp_path, keep=3)
    ck.save(1, _state(1.0), {"cycle": 0})
    ck.wait()
    real = checkpointing.ocp.CheckpointManager.save

    def full(self, step, *a, **k):
        (self.directory / f"{step}.orbax-checkpoint-tmp").mkdir()  # what orbax leaves when a write fails
        raise OSError(errno.ENOSPC, "No space left on device", str(self.directory / f"{step}.orbax-checkpoint-tmp"))

    monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "save", full)
    with pytest.raises(UserError) as e:
        ck.save(2, _state(2.0), {"cycle": 0})
    msg = str(e.value)
    assert msg.startswith("no space left on ") and "saving checkpoint 2 to" in msg
    assert "MB (one checkpoint)" in msg and "earlier checkpoints are intact (latest: step 1)" in msg
    assert not list(tmp_path.glob("checkpoints/*tmp*"))  # the partial save gave its space back
    with pytest.raises(UserError):
        ck.wait()  # reported again to whoever asks, never as a traceback
    ck.close()  # does not raise a second time
    monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "save", real)
    again = checkpointing.Checkpointer(tmp_path, keep=3)
    step, state, meta = again.restore(_state(0.0))
    assert step == 1 and np.asarray(state["w"]).tolist() == [1.0] * 4 and meta == {"cycle": 0}
    again.close()


def test_background_write_failure_is_one_line(tmp_path, monkeypatch):
    """tensorstore reports an OS error in the async write as a ValueError carrying the code, when orbax is
    next waited on; the step it names is the one reported, and its partial folder is removed."""
    ck = checkpointing.Checkpointer(tmp_path, keep=3)
    ck.save(3, _state(3.0), {})
    ck.wait()
    real = checkpointing.ocp.CheckpointManager.wait_until_finished

    def fail(self):
        real(self)
        tmp = self.directory / "4.orbax-checkpoint-tmp"
        (self.directory / "4").rename(tmp)  # as if the commit (the rename) never happened
        raise ValueError(f'RESOURCE_EXHAUSTED: Error writing "w/0" at "{tmp}/state": Failed to write 1677695 '
                         f"bytes to file 4: No space left on device [os_error_code='28']")

    ck.save(4, _state(4.0), {})
    monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "wait_until_finished", fail)
    with pytest.raises(UserError, match="no space left .* checkpoint 4 .*latest: step 3"):
        ck.wait()
    monkeypatch.undo()
    ck.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3"]


def test_other_filesystem_fault_is_one_line_and_a_bug_keeps_its_type(tmp_path, monkeypatch):
    ck = checkpointing.Checkpointer(tmp_path, keep=3)

    def eio(self, step, *a, **k):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "save", eio)
    with pytest.raises(UserError, match="cannot save checkpoint 5 .*Input/output error.*no earlier checkpoint"):
        ck.save(5, _state(5.0), {})
    ck.close()
    ck = checkpointing.Checkpointer(tmp_path, keep=3)

    def bug(self, step, *a, **k):
        raise RuntimeError("a bug in the caller")

    monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "save", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        ck.save(6, _state(6.0), {})
    monkeypatch.undo()
    ck.close()


def test_close_releases_the_workdir_lock(tmp_path):
    ck = checkpointing.Checkpointer(tmp_path, keep=1, lock=workdir.prepare(tmp_path))
    with pytest.raises(UserError, match="another run"):
        workdir.prepare(tmp_path)
    ck.close()
    workdir.prepare(tmp_path).release()


FULL_AT_10 = (
    "import errno, sys\n"
    "import orbax.checkpoint as ocp\n"
    "real = ocp.CheckpointManager.save\n"
    "def save(self, step, *a, **k):\n"
    "    if step >= 10:\n"
    "        raise OSError(errno.ENOSPC, 'No space left on device', str(self.directory))\n"
    "    return real(self, step, *a, **k)\n"
    "ocp.CheckpointManager.save = save\n"
    "from boostmis_jax.main import entry\n"
    "entry()\n")


def run_on_a_terminal(cmd) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal, as a user sees it: tqdm draws a live bar there."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=600), out.decode(errors="replace")


def test_full_disk_mid_training_cli_last_line_and_the_rerun_resumes(tmp_path):
    """The save at step 10 fails while the terminal's progress bar is live: the bar is closed first, the
    error is the very last output, exit 2; the checkpoint of step 5 is intact and the same command (with
    room again) resumes from it."""
    wd = tmp_path / "w"
    args = cli(wd, "--config.checkpoint.every_steps=5", steps=15)
    rc, err = run_on_a_terminal([sys.executable, "-c", FULL_AT_10, *args[3:]])
    assert rc == 2 and "Traceback" not in err, err[-2000:]
    last = err.rstrip("\r\n").replace("\r", "\n").split("\n")[-1]
    assert last.startswith("error: no space left on ") and "checkpoint 10" in last
    assert "earlier checkpoints are intact (latest: step 5)" in last
    assert err.endswith(last + "\r\n"), repr(err[-300:])  # nothing (no bar redraw) after the error
    assert "orbax" not in err  # no orbax logs
    q = run_cmd(args)
    assert q.returncode == 0, q.stderr[-2000:]
    assert "resuming from step 5" in q.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tiny tmpfs")
def test_real_full_tmpfs_is_one_line(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("mount is not permitted here")
    try:
        ck = checkpointing.Checkpointer(mnt / "w", keep=3)
        ck.save(1, _state(1.0), {})
        ck.wait()
        big = {"w": jnp.asarray(np.random.default_rng(0).normal(size=1 << 20).astype(np.float32))}
        with pytest.raises(UserError, match="no space left on .*checkpoint 2.*latest: step 1"):
            ck.save(2, big, {})
            ck.wait()
        ck.close()
        assert sorted(p.name for p in (mnt / "w" / "checkpoints").iterdir()) == ["1"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# ======================================================================================================
# The last line is the error
# ======================================================================================================
def test_divergence_ends_with_the_error_as_the_last_stderr_line(tmp_path):
    rc, err = run_on_a_terminal(cli(tmp_path / "w", "--config.train.lr=1e30", steps=20))
    assert rc == 2 and "Traceback" not in err, err[-2000:]
    last = err.rstrip("\r\n").replace("\r", "\n").split("\n")[-1]
    assert last.startswith("error: training diverged at step"), repr(err[-500:])
    assert err.endswith(last + "\r\n"), repr(err[-300:])


def test_divergence_off_a_terminal_too(tmp_path):
    """Piped stderr (CI, a log file): plain progress lines, and still the error last."""
    p = run_cmd(cli(tmp_path / "w", "--config.train.lr=1e30", steps=20))
    assert error_line(p).startswith("error: training diverged at step"), p.stderr[-1000:]
