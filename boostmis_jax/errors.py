"""User-facing errors: one line naming the problem and the fix, no traceback.

`boundary` is the one place where what libraries raise while reading or writing a user's file becomes that
line: numpy, zipfile, zlib, PIL, pydicom, orbax and json raise more types than any call site remembers
(a damaged deflate stream is `zlib.error`, a huge integer `OverflowError`, a JSON `null` where an object
was expected `AttributeError`), so call sites name the file and the fix, and the list lives here.
"""
from __future__ import annotations

import contextlib
import pickle
import struct
import zipfile
import zlib
from collections.abc import Iterator


class UserError(Exception):
    """Bad input (file, shape, dtype, value, config). `main` prints `str(e)` and exits with code 2."""


# What libraries raise on a damaged, foreign or out-of-range input. Not Exception: a bug in our own code
# (NameError, AssertionError, RecursionError, ...) must still surface with its traceback.
LIBRARY_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
    ArithmeticError, zlib.error, zipfile.BadZipFile, pickle.UnpicklingError, struct.error, MemoryError)

MAX_SHOWN = 120  # characters of a value (a path, a label, a library's message) quoted in one line


def cap(text: object, limit: int = MAX_SHOWN) -> str:
    """One line of at most `limit` characters (plus how much was cut): a message quoting a 7 MB value is
    not one line."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else f"{s[:limit]}... ({len(s) - limit} more characters)"


def cap_list(values: object, shown: int = 5) -> str:
    """The first few items of a long list and how many there are: 'a, b, c, ... (1,000,000 in all)'."""
    items = [str(v) for v in values]  # type: ignore[attr-defined]
    head = ", ".join(cap(v, 40) for v in items[:shown])
    return head if len(items) <= shown else f"{head}, ... ({len(items):,} in all)"


def describe(e: BaseException) -> str:
    """'TypeName: first words of the message', capped; numpy calls unknown bytes 'pickled data ...
    allow_pickle', which must never suggest unpickling a data file."""
    if isinstance(e, MemoryError):
        return "too large for this machine's memory"
    msg = str(e)
    if "pickle" in msg:
        return "unrecognized content: not a numpy file, or it holds pickled objects"
    if isinstance(e, zlib.error):
        return f"damaged compressed data ({cap(msg, 80)})"
    return f"{type(e).__name__}: {cap(msg)}" if msg else type(e).__name__


@contextlib.contextmanager
def boundary(where: object, fix: str, problem: str = "unreadable") -> Iterator[None]:
    """`with boundary(path, "re-export it with numpy.savez"):` turns what a library raises inside into
    'PATH: problem (TypeName: message); fix'. A UserError raised inside passes through unchanged."""
    try:
        yield
    except UserError:
        raise
    except LIBRARY_ERRORS as e:
        raise UserError(f"{where}: {problem} ({describe(e)}); {fix}") from None


# ======================================================================================================
# Library noise around the one line
# ======================================================================================================
@contextlib.contextmanager
def quiet_logs(*names: str) -> Iterator[None]:
    """Mute the named libraries' loggers (and their children) inside a block whose failures we report as
    one line ourselves: pydicom logs each failed decoder with its traceback before raising, so the same
    failure would otherwise print twice, the traceback first."""
    import logging

    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


_LOOP_CLOSED = "Event loop is closed"


def _is_shutdown_noise(exc: BaseException | None) -> bool:
    """What orbax/tensorstore's background event loops raise once a failed save or restore closed them:
    the failure itself reaches the user as one line; these echoes of it are not news."""
    return isinstance(exc, RuntimeError) and _LOOP_CLOSED in str(exc)


def quiet_library_noise() -> None:
    """For a CLI process: drop the echoes of a failure that background threads print after our one line
    was decided (asyncio's 'Exception in callback', a thread's or a finalizer's 'Event loop is closed'),
    so the error line is the last and only thing on stderr. Everything else still prints."""
    import logging
    import sys
    import threading

    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)  # we run no asyncio code of our own
    if getattr(threading.excepthook, "_boostmis_quiet", False):
        return
    thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook

    def on_thread(args):  # type: ignore[no-untyped-def]
        if not _is_shutdown_noise(args.exc_value):
            thread_hook(args)

    def on_unraisable(args):  # type: ignore[no-untyped-def]
        if not _is_shutdown_noise(args.exc_value):
            unraisable_hook(args)

    on_thread._boostmis_quiet = True  # type: ignore[attr-defined]
    threading.excepthook, sys.unraisablehook = on_thread, on_unraisable
