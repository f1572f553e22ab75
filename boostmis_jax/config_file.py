"""The config file a user passes, checked against the defaults, and its errors as one line.

Shared by the entries (`main`, `study`) that load a config file through ml_collections' config_flags; no
flags are defined here, so any entry may import it.
"""
from __future__ import annotations

import difflib
import linecache
import os
import re

from ml_collections import ConfigDict


def one_line(e: BaseException) -> str:
    """The message alone: KeyError's quoting and `<class 'int'>` unwrapped, whitespace folded, cut."""
    while e.args and isinstance(e.args[0], BaseException):
        e = e.args[0]
    text = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    text = re.sub(r"<class '([\w.]+)'>", r"\1", " ".join(text.split())) or type(e).__name__
    return text[:300]


def config_path(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1].split(":", 1)[0]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1].split(":", 1)[0]
    return None


def config_file_error(e: BaseException, path: str | None) -> str | None:
    """'--config file F line N (`source`): message' for the deepest exception in the chain (under absl's
    and config_flags' re-raises) that the config file itself raised, None when the file did not raise."""
    if not path or not os.path.isfile(path):
        return None
    target = os.path.realpath(path)
    found: tuple[BaseException, int] | None = None
    exc: BaseException | None = e
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            if os.path.realpath(tb.tb_frame.f_code.co_filename) == target:
                found = (exc, tb.tb_lineno)
            tb = tb.tb_next
        if isinstance(exc, SyntaxError) and exc.filename and os.path.realpath(exc.filename) == target:
            found = (exc, exc.lineno or 0)
        exc = exc.__cause__ or exc.__context__
    if found is None:
        return None
    exc, line = found
    src = linecache.getline(target, line).strip()
    msg = exc.msg if isinstance(exc, SyntaxError) else one_line(exc)
    return f"--config file {path} line {line}" + (f" (`{src}`)" if src else "") + f": {msg}"


def missing_get_config(e: BaseException, path: str | None) -> str | None:
    """config_flags imports the file under a made-up module name ('config_config') and asks it for
    get_config: name the user's file and the function it lacks instead."""
    if isinstance(e, AttributeError) and "get_config" in str(e) and path:
        return (f"--config file {path} defines no get_config(); add `def get_config():` returning the "
                "config, as configs/demo.py does")
    return None


# ======================================================================================================
# The config file against the defaults: every key it sets must be one the defaults know, with their type
# ======================================================================================================
def _flat(cfg: ConfigDict, prefix: str = "") -> dict[str, tuple[object, type | None]]:
    """{'a.b': (value, declared type)} for every leaf."""
    out: dict[str, tuple[object, type | None]] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, ConfigDict):
            out.update(_flat(v, key + "."))
        else:
            try:
                declared = cfg.get_type(k)
            except Exception:  # noqa: BLE001  a plain attribute has no declared type
                declared = None
            out[key] = (v, declared)
    return out


def _type_ok(value: object, default: object, declared: type | None) -> bool:
    """ConfigDict's own rules: int into a float field, a list for a tuple; None only where the default is
    None (a placeholder); a bool is not a number."""
    want = type(default) if default is not None else declared
    if want is None:
        return True
    if value is None:
        return default is None
    if isinstance(value, bool) or want is bool:
        return isinstance(value, bool) and want is bool
    if want is float:
        return isinstance(value, (int, float))
    if want in (tuple, list):
        return isinstance(value, (tuple, list))
    return isinstance(value, want)


def check_against_defaults(cfg: ConfigDict, path: str) -> None:
    """Keys the defaults do not know are typos (configs build on defaults.get_config()); keys the defaults
    have and the file dropped, or a value of another type, would fail later as a traceback. UserError."""
    from boostmis_jax.defaults import get_config
    from boostmis_jax.errors import UserError

    have, want = _flat(cfg), _flat(get_config())
    unknown = [k for k in have if k not in want]
    if unknown and all(k.startswith("study.") for k in unknown):
        raise UserError(f"--config file {path} is a study config (it has a `study` section); run it with "
                        f"python -m boostmis_jax.study, or use a configs/*.py without one")
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(want), n=1)
            hints.append(f"{k}" + (f" (did you mean {close[0]}?)" if close else ""))
        raise UserError(f"--config file {path} sets unknown key{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(hints)}; fix the name (every key is listed in boostmis_jax/defaults.py)")
    missing = [k for k in want if k not in have]
    if missing:
        raise UserError(f"--config file {path} lacks key{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}; build it on "
                        f"boostmis_jax.defaults.get_config() as configs/demo.py does")
    for k, (v, _) in have.items():
        default, declared = want[k]
        if not _type_ok(v, default, declared):
            kind = type(default).__name__ if default is not None else getattr(declared, "__name__", "?")
            raise UserError(f"config {k}={v!r} (set in {path}) has type {type(v).__name__}, expected {kind}; "
                            f"fix it in the file or pass --config.{k}=...")
