"""CLI: python -m boostmis_jax.main --config configs/NAME.py --workdir DIR [--config.a.b=value ...]

Thin on purpose: parse flags, turn user errors into one line and a non-zero exit, call `train.run`.
Re-running the same command resumes from the latest checkpoint in DIR.

Every user mistake ends in one `error: ...` line on stderr, the last line, exit 2: a mistyped flag or key
(on the command line or in the config file), a value of the wrong type, a bad value (defaults.validate), a
bad input file, a filesystem fault in the workdir. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno
import os
import sys

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

from boostmis_jax.config_file import (
    check_against_defaults,
    config_file_error,
    config_path,
    missing_get_config,
    one_line,
)
from boostmis_jax.errors import cap

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (metrics, checkpoints, summary); "
                                                "re-use it to resume.")

EXIT_USER_ERROR = 2
MAX_LINE = 2000  # the one line stays a line: a message quoting a huge value is cut (errors.cap)


def _die(msg: str) -> None:
    """The error line, last on stderr: progress bars are closed (and stdout flushed) before it."""
    _close_bars()
    sys.stdout.flush()
    print(f"error: {cap(msg, MAX_LINE)}", file=sys.stderr)
    sys.stderr.flush()
    sys.exit(EXIT_USER_ERROR)


def _close_bars() -> None:
    """Close every open tqdm bar: one left open is redrawn (at exit or by its refresh) after the error."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        bar.close()


def _parse(argv: list[str]) -> list[str]:
    """absl parsing with config_flags' long tracebacks (mistyped keys, missing files) cut to one line; an
    error raised inside the config file names its line."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:
        missing = missing_get_config(e, config_path(argv))
        if missing:
            _die(missing)
        where = config_file_error(e, config_path(argv))
        if where:
            _die(f"{where}; fix that line (the keys and their types are in boostmis_jax/defaults.py)")
        if isinstance(e, flags.Error):
            _die(one_line(e) + "; check the flag name and value (python -m boostmis_jax.main --help)")
        if isinstance(e, (KeyError, AttributeError, ValueError, TypeError, OSError, SyntaxError)):
            _die(one_line(e) + "; fix the --config file or override (keys are listed in "
                                "boostmis_jax/defaults.py)")
        raise
    return []


def _single_process(cfg: ConfigDict) -> bool:
    """No coordinator in the config or the environment: parallel.init_distributed will do nothing."""
    return not (cfg.parallel.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
                or os.environ.get("SLURM_JOB_ID"))


def _workdir_fault(e: OSError, workdir: str) -> str | None:
    """One line for a filesystem fault while writing the workdir (full disk, read-only, permission, a file
    in the way); None for any other OSError (a bug, or an input file: those keep their traceback)."""
    codes = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR,
             errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.ESTALE)
    if e.errno not in codes:
        return None
    root = os.path.realpath(workdir)
    names = [n for n in (e.filename, getattr(e, "filename2", None)) if n]
    inside = [n for n in names if os.path.realpath(os.fspath(n)).startswith(root + os.sep)
              or os.path.realpath(os.fspath(n)) == root]
    if not inside and not (e.errno in (errno.ENOSPC, errno.EDQUOT) and not names):
        return None
    what = inside[0] if inside else workdir
    fix = {errno.ENOSPC: "free space on that disk", errno.EDQUOT: "free space (disk quota)",
           errno.EROFS: "that filesystem is read-only"}.get(e.errno, "check that folder")
    return (f"cannot write {what} ({e.strerror}); {fix} or point --workdir elsewhere; re-run the same "
            f"command to resume from the latest checkpoint")


def _out_of_memory(e: BaseException, cfg: ConfigDict) -> str | None:
    """One line for running out of device (XLA RESOURCE_EXHAUSTED) or host memory, naming the sizes that
    set it; None for anything else."""
    if not (isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e)):
        return None
    where = "host" if isinstance(e, MemoryError) else "device"
    t = cfg.train
    smaller = max(1, int(t.batch_size) // 4)
    return (f"out of {where} memory with train.batch_size={t.batch_size} (x{1 + int(cfg.ssl.uratio)} rows "
            f"per step with ssl.uratio={cfg.ssl.uratio}), train.eval_batch_size={t.eval_batch_size}, "
            f"al.chunk={cfg.al.chunk}; lower them (e.g. --config.train.batch_size={smaller}) or use a smaller "
            "model or data.image_size; re-run the same command to resume")


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        _die(f"unexpected arguments {argv[1:]}; pass options as --config.KEY=VALUE")
    try:
        cfg = _CONFIG.value
        if cfg is not None:
            cfg.get("seed")  # config_flags loads lazily: force it so a bad file fails here, in one line
    except Exception as e:  # noqa: BLE001  a user's config file can raise anything
        _die(f"--config could not be loaded: {one_line(e)}; pass an existing configs/*.py with get_config()")
    if cfg is None:
        _die("--config is required, e.g. --config configs/demo.py")
    if not _WORKDIR.value:
        _die("--workdir is required, e.g. --workdir runs/demo")
    from boostmis_jax.errors import UserError

    try:
        check_against_defaults(cfg, flags.FLAGS["config"].config_filename)
    except UserError as e:
        _die(str(e))
    from boostmis_jax.train import Interrupted, run

    try:
        if _single_process(cfg):  # multi-process: process 0 alone locks, in train.setup
            from boostmis_jax.workdir import refuse_if_busy
            refuse_if_busy(_WORKDIR.value)
        out = run(cfg, _WORKDIR.value)
    except UserError as e:
        _die(str(e))
    except Interrupted as e:
        _close_bars()
        print(f"{e}; checkpoint saved, re-run the same command to resume", file=sys.stderr)
        sys.exit(128 + e.signum)
    except OSError as e:
        line = _workdir_fault(e, _WORKDIR.value)
        if line is None:
            raise
        _die(line)
    except Exception as e:  # noqa: BLE001  only out-of-memory is a user's matter; the rest re-raises
        line = _out_of_memory(e, cfg)
        if line is None:
            raise
        _die(line)
    if out.get("status") == "waiting_for_labels":
        sys.exit(0)


def entry() -> None:
    from boostmis_jax.errors import quiet_library_noise
    from boostmis_jax.xla_env import prepare_process
    prepare_process()
    quiet_library_noise()
    app.run(main, flags_parser=_parse)


if __name__ == "__main__":
    entry()
