"""Annotation page: the files oracle's pending queries in a browser, labelled with a click or a key.

`python -m boostmis_jax.annotate --workdir DIR` serves `static/index.html` and a small JSON API on
127.0.0.1 behind a random token. Every answer goes through the files oracle's own validator and writer
(`boostmis_jax.oracle.validate_rows` / `write_answers`), so the page and a hand-edited `cycle_N.csv` are the
same thing. No jax, no dataset loading: the files oracle already wrote one PNG per query and a manifest.
"""
from boostmis_jax.annotate.server import AnnotateServer, Annotator, make_server

__all__ = ["AnnotateServer", "Annotator", "make_server"]
