"""Replaced by the study command; this file only forwards to it.

  python -m boostmis_jax.study --config configs/study_pneumonia.py --workdir runs/study_pneumonia

runs every method (supervised, FixMatch, FlexMatch, FreeMatch, BoostMIS with and without active annotation,
the selector ablations, the every-label ceiling) x seeds at equal labels and steps, resumably, and writes
study.json, study.md and the plots (see boostmis_jax/study.py). Arguments are passed through:

  python benchmarks/pneumonia_study.py --workdir runs/study_pneumonia [--config.KEY=VALUE ...]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    args = sys.argv[1:]
    if not any(a.startswith("--workdir") for a in args) or any(a.startswith(("--study", "--out")) for a in args):
        print("error: benchmarks/pneumonia_study.py is replaced by the study command; run: python -m "
              "boostmis_jax.study --config configs/study_pneumonia.py --workdir DIR [--config.KEY=VALUE ...]",
              file=sys.stderr)
        sys.exit(2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    os.execve(sys.executable, [sys.executable, "-m", "boostmis_jax.study",
                               f"--config={ROOT / 'configs' / 'study_pneumonia.py'}", *args], env)


if __name__ == "__main__":
    main()
