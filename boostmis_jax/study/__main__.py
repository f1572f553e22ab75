"""python -m boostmis_jax.study --config configs/study_*.py --workdir DIR [--config.KEY=VALUE ...]
[--dry_run]"""
from __future__ import annotations

import os
import sys

from boostmis_jax.errors import UserError
from boostmis_jax.study.cli import resolve_preset, run_study
from boostmis_jax.study.plan import run_base


def main() -> None:
    from absl import app, flags, logging
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, "Path to a configs/study_*.py file "
                                             "(path:gpu selects the gpu preset).", lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, "Study directory: runs/<method>/seed<k>, study.json, "
                                                  "study.md, PNGs; re-use it to resume.")
    dry_run = flags.DEFINE_bool("dry_run", False, "Print the planned runs and exit.")

    def die(msg: str) -> None:
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)

    def one_line(e: BaseException) -> str:
        return (" ".join(str(e).split()) or type(e).__name__)[:300]

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            die(one_line(e) + "; check the flag name and value (python -m boostmis_jax.study --help)")
        except (KeyError, AttributeError, ValueError, TypeError, OSError, SyntaxError) as e:
            from boostmis_jax.config_file import config_file_error, config_path
            where = config_file_error(e, config_path(argv))
            if where:
                die(f"{where}; fix that line")
            die(one_line(e) + "; fix the --config file or override (keys: boostmis_jax/defaults.py, "
                "study.study_section)")
        return []

    def run(argv: list[str]) -> None:
        from boostmis_jax.train import Interrupted

        logging.set_verbosity(logging.WARNING)
        if len(argv) > 1:
            die(f"unexpected arguments {argv[1:]}; pass options as --config.KEY=VALUE")
        try:
            cfg = config.value
            if cfg is not None:
                cfg.get("seed")
        except Exception as e:  # noqa: BLE001  a user's config file can raise anything
            die(f"--config could not be loaded: {one_line(e)}; pass a configs/study_*.py with get_config()")
        if cfg is None:
            die("--config is required, e.g. --config configs/study_pneumonia.py")
        if "study" not in cfg:
            die("--config has no study section; use a configs/study_*.py (main runs a single config)")
        if not workdir.value:
            die("--workdir is required, e.g. --workdir runs/study_pneumonia")
        name = config_flags.get_config_filename(flags.FLAGS["config"])
        try:
            from boostmis_jax.config_file import check_against_defaults
            check_against_defaults(run_base(cfg), name)
            cfg = resolve_preset(cfg, name, config_flags.get_override_values(flags.FLAGS["config"]))
            run_study(cfg, workdir.value, command=" ".join(["python -m boostmis_jax.study", *sys.argv[1:]]),
                      config_name=name, dry_run=dry_run.value)
        except UserError as e:
            die(str(e))
        except Interrupted as e:
            print(f"[study] {e}; checkpoint saved, re-run the same command to resume", file=sys.stderr)
            sys.exit(128 + e.signum)

    from boostmis_jax.xla_env import prepare_process
    prepare_process()
    # the study process only plans and reports on a GPU (workers or the in-process run allocate on demand)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    app.run(run, flags_parser=parse)


if __name__ == "__main__":
    main()
