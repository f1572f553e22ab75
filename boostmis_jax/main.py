"""CLI: python -m boostmis_jax.main --config configs/NAME.py --workdir DIR [--config.a.b=value ...]

Thin on purpose: parse flags, turn user errors into one line and a non-zero exit, call `train.run`.
Re-running the same command resumes from the latest checkpoint in DIR.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (metrics, checkpoints, summary); "
                                                "re-use it to resume.")

EXIT_USER_ERROR = 2


def _die(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _parse(argv: list[str]) -> list[str]:
    """absl parsing with config_flags' long tracebacks (mistyped keys, missing files) cut to one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _die(_one_line(e) + "; check the flag name and value (python -m boostmis_jax.main --help)")
    except (KeyError, AttributeError, ValueError, TypeError, OSError, SyntaxError) as e:
        _die(_one_line(e) + "; fix the --config file or override (keys are listed in boostmis_jax/defaults.py)")
    return []


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        _die(f"unexpected arguments {argv[1:]}; pass options as --config.KEY=VALUE")
    try:
        cfg = _CONFIG.value
        if cfg is not None:
            cfg.get("seed")  # config_flags loads lazily: force it so a bad file fails here, in one line
    except Exception as e:  # noqa: BLE001  a user's config file can raise anything
        _die(f"--config could not be loaded: {_one_line(e)}; pass an existing configs/*.py with get_config()")
    if cfg is None:
        _die("--config is required, e.g. --config configs/demo.py")
    if not _WORKDIR.value:
        _die("--workdir is required, e.g. --workdir runs/demo")
    from boostmis_jax.errors import UserError
    from boostmis_jax.train import Interrupted, run

    try:
        out = run(cfg, _WORKDIR.value)
    except UserError as e:
        _die(str(e))
    except Interrupted as e:
        print(f"{e}; checkpoint saved, re-run the same command to resume", file=sys.stderr)
        sys.exit(128 + e.signum)
    if out.get("status") == "waiting_for_labels":
        sys.exit(0)


def entry() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Persistent XLA cache: a resumed or repeated run skips the (tens of seconds) compile of the same step.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "boostmis_jax", "xla"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    app.run(main, flags_parser=_parse)


if __name__ == "__main__":
    entry()
