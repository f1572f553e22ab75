"""Atomic file writes, the one home for them: tmp file in the same folder, fsync, then os.replace.

A killed run (or a full disk) therefore never leaves a torn summary, split, CSV or model file behind: readers
see the old file or the new one. mkstemp/mkdtemp create 0600/0700 (private until complete); the finished
output gets the mode any tool's output gets, 0666/0777 less the umask, so a colleague can read it.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def umask() -> int:
    """The process umask, read without changing it (os.umask sets it, racing other threads' file creation)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # no /proc (macOS): the classic read, set back at once
    os.umask(old)
    return old


def publish_tree(root: str | os.PathLike) -> None:
    """Give a folder built privately (mkdtemp, 0700) and everything in it the umask's modes: dirs
    0777 & ~umask, files 0666 & ~umask (an executable bit a library set is kept, the umask applied)."""
    mask = umask()
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, 0o777 & ~mask)
        for name in files:
            p = os.path.join(folder, name)
            mode = os.stat(p).st_mode
            os.chmod(p, (0o777 if mode & 0o111 else 0o666) & ~mask)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Call write(tmp_path) then os.replace it over `path`; the tmp file lives in the same dir (same fs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) atomically and durably."""
    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, _write)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive `fcntl.flock` on `path` (created if missing) for the block: one writer at a time across
    processes (a thread lock covers one process only). The kernel drops it if the holder dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def kind_of(path: str | os.PathLike) -> str:
    """What sits at `path`, for a message: 'a folder', 'a FIFO (named pipe)', ... (never 'a folder' for
    everything that is not a regular file)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "nothing readable"
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"
