"""A study's outputs: DIR/study.json, DIR/study.md and the PNGs (tables from report.py, figures from
plots.py; kept apart so neither imports the other)."""
from __future__ import annotations

import json
from pathlib import Path

from boostmis_jax.fsutil import atomic_write_text
from boostmis_jax.reporting import to_jsonable
from boostmis_jax.study import plots, report


def write_outputs(workdir: Path, meta: dict, runs: list[dict], class_names: list[str]) -> None:
    """DIR/study.json, DIR/study.md and the PNGs, from every run record available (the caller passes all of
    them, finished earlier or now); each file replaced atomically, so a failure leaves the last good one."""
    order = meta["methods"]
    metric = meta.get("primary", "aubc/balanced_accuracy").split("/")[-1]
    made = []
    for name, fn in (("learning_curves.png", lambda p: plots.plot_curves(p, runs, order, metric)),
                     ("confusion_matrices.png",
                      lambda p: plots.plot_confusions(p, runs, order, class_names))):
        try:
            fn(workdir / name)
            made.append(name)
        except (ValueError, KeyError, IndexError, TypeError) as e:   # a plot never costs the tables
            print(f"warning: {name} not drawn ({' '.join(str(e).split())[:200]})")
    meta = {**meta, "plots": made}
    doc = report.study_document(meta, runs)
    text = json.dumps(to_jsonable(doc), indent=2, allow_nan=False) + "\n"
    md = report.render_markdown(meta, runs, meta.get("reference", ""))
    atomic_write_text(workdir / "study.json", text)
    atomic_write_text(workdir / "study.md", md)
