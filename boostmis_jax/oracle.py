"""Oracles: who labels the samples that active learning picks.

`simulated` reveals the ground truth already in the training set (benchmarks). `files` hands the picks to a
person: it writes a CSV (and a contact sheet) into the workdir and stops; the person fills the `label`
column and re-runs the same command, and the run continues from the saved checkpoint with those labels.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from boostmis_jax.errors import UserError

__all__ = [
    "ORACLES",
    "FilesOracle",
    "Query",
    "SimulatedOracle",
    "make_oracle",
    "register_oracle",
]

CSV_COLUMNS = ("index", "id", "selector", "score", "predicted", "predicted_name", "label")


@dataclasses.dataclass
class Query:
    """One picked sample."""

    index: int  # row in the train set
    id: str  # Dataset.train_ids[index] (file name for image folders)
    selector: str  # which selector picked it (e.g. "aus", "bus")
    score: float  # that selector's informativeness score
    predicted: int  # current model's predicted class
    selectors: tuple[str, ...] = ()  # every selector that ranked it in its top-K (the first one picked it)
    confidence: float | None = None  # the model's max class probability for it


ORACLES: dict[str, Callable[..., object]] = {}


def register_oracle(name: str) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """Register a factory `f(*, train_y, num_classes, class_names, images) -> oracle` under `name`."""

    def deco(factory: Callable[..., object]) -> Callable[..., object]:
        ORACLES[name] = factory
        return factory

    return deco


class SimulatedOracle:
    """Answers every query instantly with the stored ground-truth label (for benchmarks on labelled data)."""

    def __init__(self, train_y: np.ndarray):
        self.train_y = np.asarray(train_y).reshape(-1)

    def answer(self, cycle: int, queries: list[Query], workdir: str | os.PathLike) -> dict[int, int] | None:
        out = {}
        for q in queries:
            if not 0 <= q.index < self.train_y.shape[0]:
                raise ValueError(f"query index {q.index} outside train set of {self.train_y.shape[0]}")
            label = int(self.train_y[q.index])
            if label < 0:
                raise UserError(
                    f"oracle=simulated: train sample {q.id} has no ground-truth label ({label}); "
                    "use oracle=files to label it by hand"
                )
            out[int(q.index)] = label
        return out


class FilesOracle:
    """Human-in-the-loop oracle through files in `workdir/queries/`.

    First call for a cycle: writes `cycle_{cycle}.csv` (+ `.png` contact sheet when images are given), prints
    what to do and returns None so the caller can exit cleanly. After the person fills the `label` column,
    the next call reads it back, validates every row and returns {index: label}. Nothing is written on the
    read path, so a rejected file stays exactly as the person left it.
    """

    def __init__(self, num_classes: int, class_names: list[str] | None, images: np.ndarray | None):
        if class_names is None:
            class_names = [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise UserError(
                f"class_names: got {len(class_names)} names for {num_classes} classes; "
                "give one name per class"
            )
        self.num_classes = int(num_classes)
        self.class_names = [str(c) for c in class_names]
        self.images = images
        self._by_name = {c: i for i, c in enumerate(self.class_names)}
        self._by_lower = {c.strip().lower(): i for i, c in enumerate(self.class_names)}

    @staticmethod
    def paths(cycle: int, workdir: str | os.PathLike) -> tuple[Path, Path]:
        qdir = Path(workdir) / "queries"
        return qdir / f"cycle_{cycle}.csv", qdir / f"cycle_{cycle}.png"

    def _name(self, k: int) -> str:
        return self.class_names[k] if 0 <= k < self.num_classes else str(k)

    # -- writing -----------------------------------------------------------------------------------------
    def _write(self, cycle: int, queries: list[Query], csv_path: Path, png_path: Path) -> None:
        # Contact sheet first, CSV last and atomically: the CSV's existence is what marks "queries written".
        if self.images is not None and queries:
            from boostmis_jax.reporting import contact_sheet

            imgs = np.asarray(self.images)[[q.index for q in queries]]
            captions = [f"{q.id}\npred: {self._name(q.predicted)}" for q in queries]
            contact_sheet(png_path, imgs, captions)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for q in queries:
            writer.writerow(
                [int(q.index), q.id, q.selector, format(float(q.score), ".6g"), int(q.predicted),
                 self._name(q.predicted), ""]
            )
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = csv_path.with_name(f".{csv_path.name}.tmp")
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        os.replace(tmp, csv_path)

    def _instructions(self, csv_path: Path, png_path: Path, n: int) -> str:
        classes = ", ".join(f"{i}={c}" for i, c in enumerate(self.class_names))
        lines = [
            f"Active learning picked {n} samples to label. Oracle 'files' is waiting for you:",
            f"  1. open {csv_path}",
        ]
        if self.images is not None and n:
            lines.append(f"     (thumbnails with ids and current predictions: {png_path})")
        lines += [
            (
                "  2. fill the empty 'label' cell of EVERY row with a class id or class name "
                f"({classes}); leave the other columns as they are"
            ),
            "  3. save it as CSV and re-run the same command; training resumes with your labels",
        ]
        return "\n".join(lines)

    # -- reading -----------------------------------------------------------------------------------------
    def _parse_label(self, cell: str) -> int | None:
        text = cell.strip()
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is not None:
            if value.is_integer() and 0 <= value < self.num_classes:
                return int(value)
            return self._by_name.get(text)  # a numeric-looking class name, else invalid
        if text in self._by_name:
            return self._by_name[text]
        return self._by_lower.get(text.lower())

    def _read(self, csv_path: Path, queries: list[Query]) -> dict[int, int]:
        try:
            text = csv_path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often add a BOM
        except UnicodeDecodeError:
            raise UserError(f"{csv_path}: not UTF-8 text; save it as CSV (UTF-8) and re-run") from None
        first = text.split("\n", 1)[0]
        delimiter = ";" if ";" in first and "," not in first else ","  # some locales save with ';'
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        header = [h.strip().lower() for h in next(reader, [])]
        missing_cols = [c for c in ("index", "id", "label") if c not in header]
        if missing_cols:
            raise UserError(
                f"{csv_path}: header lacks column(s) {', '.join(missing_cols)}; keep the header row "
                f"{','.join(CSV_COLUMNS)} as written"
            )
        col = {name: header.index(name) for name in ("index", "id", "label")}
        expected = {int(q.index): q for q in queries}
        classes = ", ".join(f"{i}={c}" for i, c in enumerate(self.class_names))

        problems: list[str] = []
        seen: dict[int, int] = {}  # index -> row number
        labels: dict[int, int] = {}
        for rownum, row in enumerate(reader, start=2):  # row 1 is the header, as a spreadsheet counts
            if not any(cell.strip() for cell in row):
                continue  # blank lines that spreadsheets like to append
            cells = row + [""] * (len(header) - len(row))
            index_cell, id_cell, label_cell = (cells[col[k]].strip() for k in ("index", "id", "label"))
            where = f"{csv_path} row {rownum} (id={id_cell or '?'})"
            try:
                index = int(index_cell)
            except ValueError:
                problems.append(f"{where}: index {index_cell!r} is not an integer; restore the written index")
                continue
            if index not in expected:
                problems.append(
                    f"{where}: index {index} was not among the queries of this cycle; "
                    "delete that row or restore the written index"
                )
                continue
            if id_cell != expected[index].id:
                problems.append(
                    f"{where}: id does not match index {index} (expected {expected[index].id}); "
                    "restore the written index and id"
                )
                continue
            if index in seen:
                problems.append(
                    f"{where}: duplicate of row {seen[index]} (index {index}); keep one row per sample"
                )
                continue
            seen[index] = rownum
            if not label_cell:
                problems.append(f"{where}: label is empty; fill every label, then re-run")
                continue
            label = self._parse_label(label_cell)
            if label is None:
                problems.append(
                    f"{where}: label {label_cell!r} is neither a class id in [0, {self.num_classes}) "
                    f"nor a class name ({classes}); fix it, then re-run"
                )
                continue
            labels[index] = label
        for index, q in expected.items():
            if index not in seen:
                problems.append(
                    f"{csv_path}: no row for index {index} (id={q.id}); "
                    "add the row back with its label, then re-run"
                )
        if problems:
            more = f" (+{len(problems) - 1} more problem(s) in this file)" if len(problems) > 1 else ""
            raise UserError(problems[0] + more)
        return labels

    def answer(self, cycle: int, queries: list[Query], workdir: str | os.PathLike) -> dict[int, int] | None:
        """Write the query file (returns None) or read back the filled one (returns {index: label})."""
        csv_path, png_path = self.paths(cycle, workdir)
        if not csv_path.exists():
            self._write(cycle, queries, csv_path, png_path)
            print(self._instructions(csv_path, png_path, len(queries)), flush=True)
            return None
        return self._read(csv_path, queries)


@register_oracle("simulated")
def _make_simulated(*, train_y, num_classes, class_names, images) -> SimulatedOracle:
    return SimulatedOracle(train_y)


@register_oracle("files")
def _make_files(*, train_y, num_classes, class_names, images) -> FilesOracle:
    return FilesOracle(num_classes, class_names, images)


def make_oracle(name: str, *, train_y, num_classes: int, class_names, images) -> object:
    """Build the oracle registered under `name` (config key `oracle`)."""
    if name not in ORACLES:
        raise UserError(f"oracle: unknown oracle {name!r}; choose one of {', '.join(sorted(ORACLES))}")
    return ORACLES[name](train_y=train_y, num_classes=num_classes, class_names=class_names, images=images)
