"""The workdir, made and locked before anything is written to it: every filesystem fault a user can meet
here (a file in the way, no permission, a read-only or full disk, another run already in it) is one line
naming the path and the fix, instead of a traceback from whichever writer hits it first.

The lock is `fcntl.flock` on DIR/.lock, held on an open file for the run's life: a second run on the same
DIR refuses at once, and a run killed with SIGKILL leaves no stale lock (the kernel drops the flock with the
process; the file itself stays and is harmless).
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
from pathlib import Path

from boostmis_jax.errors import UserError

LOCK_NAME = ".lock"
MB = 1 << 20


class WorkdirLock:
    """A prepared workdir: the held lock (process 0 only) and the folders this run created."""

    def __init__(self, path: Path, fd: int | None, created: Path | None):
        self.path, self._fd, self.created = path, fd, created

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock; a workdir this run created and never wrote to (only the lock file and empty
        folders in it) is removed, so a config error found after it was made leaves nothing behind."""
        if self.created is not None and self.held and _holds_nothing(self.created, self.path / LOCK_NAME):
            shutil.rmtree(self.created, ignore_errors=True)
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
        self.created = None


def prepare(workdir: str | os.PathLike, *, lock: bool | None = None) -> WorkdirLock:
    """Make `workdir` (and its parents), check it can take a checkpoint, and lock it; UserError otherwise.

    `lock` defaults to "this is process 0": in a multi-process run the others write nothing of their own."""
    path = Path(workdir).absolute()
    if lock is None:
        import jax
        lock = jax.process_index() == 0
    created = _make(path)
    try:
        _check_writable(path)
        fd = _lock(path) if lock else None
        held = WorkdirLock(path, fd, created if lock else None)
        try:
            _check_space(path)
        except BaseException:
            held.release()
            raise
        return held
    except BaseException:
        if created is not None and lock and _holds_nothing(created, path / LOCK_NAME):
            shutil.rmtree(created, ignore_errors=True)
        raise


# ======================================================================================================
# The checks, one UserError each
# ======================================================================================================
def _make(path: Path) -> Path | None:
    """mkdir -p `path`; the topmost folder it created (None when it existed)."""
    if path.is_symlink() and not path.exists():
        raise UserError(f"--workdir {path} is a broken symlink (to {os.readlink(path)}); remove it or choose "
                        f"another --workdir")
    if path.exists():
        if not path.is_dir():
            raise UserError(f"--workdir {path} is a file, not a folder; choose another --workdir (a new path "
                            f"is created) or move that file away")
        for sub in ("checkpoints",):
            if (path / sub).exists() and not (path / sub).is_dir():
                raise UserError(f"{path / sub} is a file, but this run keeps its checkpoints there; move it "
                                f"away or choose another --workdir")
        return None
    top = path
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    base = top.parent
    if not base.is_dir():
        raise UserError(f"cannot create --workdir {path}: {base} is a file, not a folder; choose another "
                        f"--workdir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file appeared on the way (or a race): say which one
        raise UserError(f"cannot create --workdir {path}: {_first_file(path) or path} is a file, not a "
                        f"folder; choose another --workdir") from None
    except NotADirectoryError:
        raise UserError(f"cannot create --workdir {path}: {_first_file(path) or base} is a file, not a "
                        f"folder; choose another --workdir") from None
    except OSError as e:
        raise UserError(f"cannot create --workdir {path} in {base}: {_why(e)}; choose another --workdir"
                        f"{_fix(e)}") from None
    return top


def _check_writable(path: Path) -> None:
    """Read-only folder or filesystem; root passes os.access on folders, so the lock-file write in `_lock`
    is the real probe (it raises the same line)."""
    for p in (path, path / "checkpoints"):
        if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
            raise UserError(f"--workdir {path} is not writable ({p} is read-only); fix its permissions "
                            f"(chmod u+w {p}) or choose another --workdir")


def _lock(path: Path) -> int:
    """An open fd on DIR/.lock holding an exclusive flock, with our pid written in it."""
    lock_path = path / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"--workdir {path} is not writable ({_why(e)} on {lock_path}); fix its permissions "
                        f"or choose another --workdir{_fix(e)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _read_holder(fd)
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise UserError(f"another run ({holder}) is using {path}; wait for it or use another "
                            f"--workdir") from None
        raise UserError(f"cannot lock --workdir {path} ({_why(e)} on {lock_path}); choose another "
                        f"--workdir") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    except OSError as e:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise UserError(f"cannot write to --workdir {path} ({_why(e)} on {lock_path}); choose another "
                        f"--workdir{_fix(e)}") from None
    return fd


def refuse_if_busy(workdir: str | os.PathLike) -> None:
    """The early answer for a single-process run: refuse before the data is loaded when another run holds
    DIR's lock (creating nothing). `prepare` still takes the lock for real; the probe holds it for an
    instant only, so of two runs started at once one goes on."""
    path = Path(workdir).absolute()
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return  # no lock file (or no workdir): nothing to wait for; prepare says what else is wrong
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise UserError(f"another run ({_read_holder(fd)}) is using {path}; wait for it or use another "
                            f"--workdir") from None
    finally:
        os.close(fd)  # drops our shared lock too


def _read_holder(fd: int) -> str:
    """'pid N' (and the host when it is another machine) from the lock file, for the refusal line."""
    try:
        text = os.pread(fd, 256, 0).decode(errors="replace").split()
    except OSError:
        text = []
    if not text:
        return "pid unknown"
    if len(text) > 1 and text[1] != socket.gethostname():
        return f"pid {text[0]} on host {text[1]}"
    return f"pid {text[0]}"


def _check_space(path: Path) -> None:
    """A resumed run needs room for one more checkpoint as big as its latest; a new run has no estimate."""
    found = latest_checkpoint(path / "checkpoints")
    if found is None:
        return
    step, folder = found
    need = folder_size(folder)
    free = shutil.disk_usage(path).free
    if need > free:
        raise UserError(f"not enough free space for --workdir {path}: {free / MB:.1f} MB free on "
                        f"{mount_point(path)}, a checkpoint needs about {need / MB:.1f} MB (checkpoint {step} "
                        f"is that size); free {(need - free) / MB:.1f} MB or point --workdir elsewhere")


# ======================================================================================================
# Helpers shared with checkpointing
# ======================================================================================================
def latest_checkpoint(ckpt_dir: Path) -> tuple[int, Path] | None:
    """(step, folder) of the highest committed step folder; orbax's `N.orbax-checkpoint-tmp*` are not."""
    if not ckpt_dir.is_dir():
        return None
    steps = [int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit() and p.is_dir()]
    return (max(steps), ckpt_dir / str(max(steps))) if steps else None


def folder_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def mount_point(path: Path) -> str:
    """The filesystem a path lives on, as its mount point: what a user frees space on."""
    p = Path(path).absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    while not os.path.ismount(p) and p.parent != p:
        p = p.parent
    return str(p)


def _holds_nothing(top: Path, lock_file: Path) -> bool:
    """True when `top` has no file but the lock (empty folders allowed): nothing of the run was written."""
    if not top.is_dir():
        return False
    for root, _, files in os.walk(top):
        for f in files:
            if Path(root, f) != lock_file:
                return False
    return True


def _first_file(path: Path) -> Path | None:
    for p in reversed(path.parents):
        if p.exists() and not p.is_dir():
            return p
    return None


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _fix(e: OSError) -> str:
    if e.errno in (errno.EACCES, errno.EPERM):
        return " (or fix the folder's permissions)"
    if e.errno == errno.EROFS:
        return " (that filesystem is mounted read-only)"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return " (or free space on that disk)"
    return ""
