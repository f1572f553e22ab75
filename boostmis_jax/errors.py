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
