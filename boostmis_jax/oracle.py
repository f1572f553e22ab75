"""Oracles: who labels the samples that active learning picks.

`simulated` reveals the ground truth already in the training set (benchmarks). `files` hands the picks to a
person: it writes a CSV (plus a contact sheet, one PNG per query and a JSON manifest) into the workdir and
stops; the person fills the `label` column, by hand or with the annotation page (`python -m
boostmis_jax.annotate`), and re-runs the same command, and the run continues from the saved checkpoint with
those labels.

The CSV is read, validated and written by the functions below (`read_answers`, `validate_rows`,
`write_answers`) and nothing else, so the page and a hand-edited file obey one set of rules.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from boostmis_jax.errors import UserError, describe
from boostmis_jax.fsutil import atomic_write, atomic_write_text, kind_of

__all__ = [
    "CSV_COLUMNS",
    "ORACLES",
    "CsvRow",
    "CyclePaths",
    "FilesOracle",
    "LabelSpace",
    "Manifest",
    "Query",
    "SimulatedOracle",
    "cycle_paths",
    "format_csv",
    "invocation",
    "latest_cycle",
    "make_oracle",
    "read_answers",
    "read_manifest",
    "read_rows",
    "register_oracle",
    "validate_rows",
    "write_answers",
]

CSV_COLUMNS = ("index", "id", "selector", "score", "predicted", "predicted_name", "label")
MANIFEST_VERSION = 1


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
        pending = cycle_paths(cycle, workdir).csv
        if pending.exists():  # al.oracle may change on resume, but not past a person's pending answers
            raise UserError(f"{pending}: this cycle's queries wait for a person's labels (the run stopped "
                            "under al.oracle=files); re-run with --config.al.oracle=files to read them, or "
                            f"delete {pending} to let the simulated oracle answer")
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


# ---------------------------------------------------------------------------------------------------------
# The query files of one cycle: paths, labels, CSV reading/validation/writing, manifest.
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CyclePaths:
    """Where one cycle's query files live under `workdir/queries/`."""

    csv: Path  # the answers: the only file a person edits (CSV_COLUMNS)
    sheet: Path  # contact sheet of every query (image data only)
    manifest: Path  # queries with their model info, class names and the command that continues training
    images: Path  # folder of one PNG per query, as the model sees it (image data only)
    consumed: Path  # the answers as the run read them (written once read): a later edit is reported

    def image(self, position: int) -> Path:
        """PNG of the query at `position` in the manifest (names are positions, never client input)."""
        return self.images / f"{int(position):03d}.png"


def cycle_paths(cycle: int, workdir: str | os.PathLike) -> CyclePaths:
    qdir = Path(workdir) / "queries"
    return CyclePaths(qdir / f"cycle_{cycle}.csv", qdir / f"cycle_{cycle}.png", qdir / f"cycle_{cycle}.json",
                      qdir / f"cycle_{cycle}", qdir / f"cycle_{cycle}.read.json")


def read_consumed(paths: CyclePaths) -> dict[int, int] | None:
    """The answers the run trained with for that cycle, or None (not read yet, or an older run)."""
    try:
        d = json.loads(paths.consumed.read_text(encoding="utf-8"))
        return {int(k): int(v) for k, v in d["answers"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def report_edited(workdir: str | os.PathLike, before: int, labels: LabelSpace) -> None:
    """Warn (one line per cycle) when a CSV the run already read was edited since: the run keeps the labels
    it trained with, and a person who corrected a label must know it was not used."""
    for k in range(before):
        paths = cycle_paths(k, workdir)
        used = read_consumed(paths)
        if used is None or not paths.csv.exists():
            continue
        try:
            manifest = read_manifest(k, workdir)
            now = read_answers(paths.csv, manifest.queries, labels, partial=True)
        except UserError:
            now = None
        if now != used:
            changed = sorted(i for i in set(used) | set(now or {}) if (now or {}).get(i) != used.get(i))
            shown = ", ".join(map(str, changed[:5])) + (" ..." if len(changed) > 5 else "")
            what = f"rows with index {shown}" if now is not None else "it no longer reads as valid answers"
            print(f"warning: {paths.csv} was edited after the run read it ({what}); the run keeps the labels "
                  "it read then (a read cycle's CSV is not read again)", file=sys.stderr)


def latest_cycle(workdir: str | os.PathLike) -> int | None:
    """Highest cycle N with a `queries/cycle_N.csv` (the pending one, if training waits), or None."""
    cycles = []
    for p in (Path(workdir) / "queries").glob("cycle_*.csv"):
        tail = p.stem[len("cycle_"):]
        if tail.isdigit():
            cycles.append(int(tail))
    return max(cycles) if cycles else None


class LabelSpace:
    """Class ids and names, and the one parser of a label cell (id, or name in any case/whitespace)."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None):
        if class_names is None:
            class_names = [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise UserError(
                f"class_names: got {len(class_names)} names for {num_classes} classes; "
                "give one name per class"
            )
        self.num_classes = int(num_classes)
        self.class_names = [str(c) for c in class_names]
        self._by_name = {c: i for i, c in enumerate(self.class_names)}
        self._by_lower = {c.strip().lower(): i for i, c in enumerate(self.class_names)}

        # Class names that are numbers other than their own ids (folders "1" and "2" are ids 0 and 1): a cell
        # "1" could mean either, so such a space reads and writes labels by NAME only, and says so.
        self.by_name_only = any(_as_int(c) is not None and _as_int(c) != i
                                for i, c in enumerate(self.class_names))

    def name(self, k: int) -> str:
        """Class k's name; "" for -1 (no prediction yet: a zero-label run's first round)."""
        if k == -1:
            return ""
        return self.class_names[k] if 0 <= k < self.num_classes else str(k)

    def cell(self, k: int) -> str:
        """How the CSV writes class k: its id, or its name when ids and names would be confused."""
        return self.class_names[k] if self.by_name_only else str(int(k))

    def legend(self) -> str:
        if self.by_name_only:
            return (f"class names {', '.join(self.class_names)} (numbers here: a label is read as a name, "
                    "never as an id)")
        return ", ".join(f"{i}={c}" for i, c in enumerate(self.class_names))

    def parse(self, cell: str) -> int | None:
        """Class id for a non-empty label cell, None when it names no class."""
        text = cell.strip()
        if self.by_name_only:
            return self._by_name.get(text, self._by_lower.get(text.lower()))
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


def _as_int(text: str) -> int | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


class CsvRow(NamedTuple):
    """One data row of a query CSV as text, with its spreadsheet row number (the header is row 1)."""

    rownum: int
    index: str
    id: str
    label: str


def read_rows(csv_path: str | os.PathLike) -> list[CsvRow]:
    """Parse a query CSV as a spreadsheet may save it (BOM, ';' delimiter, blank trailing rows)."""
    csv_path = Path(csv_path)
    if csv_path.exists() and not csv_path.is_file():
        raise UserError(f"{csv_path}: {kind_of(csv_path)} where the query CSV belongs; move it away and "
                        "re-run the main command (it writes the CSV again)")
    try:
        text = csv_path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often add a BOM
    except UnicodeDecodeError:
        raise UserError(f"{csv_path}: not UTF-8 text; save it as CSV (UTF-8) and re-run") from None
    except FileNotFoundError:
        raise UserError(f"{csv_path}: no such file; run the main command with al.oracle=files first") from None
    first = text.split("\n", 1)[0]
    # Spreadsheets save with ',' or, in some locales, ';'; "Text (tab-delimited)" with tabs.
    delimiter = next((d for d in (",", ";", "\t") if d in first), ",")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader, [])]
    missing_cols = [c for c in ("index", "id", "label") if c not in header]
    if missing_cols:
        raise UserError(
            f"{csv_path}: header lacks column(s) {', '.join(missing_cols)}; keep the header row "
            f"{','.join(CSV_COLUMNS)} as written"
        )
    col = {name: header.index(name) for name in ("index", "id", "label")}
    rows = []
    for rownum, row in enumerate(reader, start=2):  # row 1 is the header, as a spreadsheet counts
        if not any(cell.strip() for cell in row):
            continue  # blank lines that spreadsheets like to append
        cells = row + [""] * (len(header) - len(row))
        rows.append(CsvRow(rownum, *(cells[col[k]].strip() for k in ("index", "id", "label"))))
    return rows


def validate_rows(csv_path: str | os.PathLike, rows: Sequence[CsvRow], queries: Sequence[Query],
                  labels: LabelSpace, *, partial: bool = False) -> dict[int, int]:
    """THE validator of a cycle's answers: returns {index: class id} or raises one UserError line.

    Every row must name a query of this cycle by index and id, once; every query must have a row; a label
    must be a class id or name. `partial=True` (the annotation page) also accepts empty labels, which are
    then absent from the result; the files oracle uses `partial=False`: every label filled."""
    expected = {int(q.index): q for q in queries}
    problems: list[str] = []
    seen: dict[int, int] = {}  # index -> row number
    answers: dict[int, int] = {}
    for r in rows:
        where = f"{csv_path} row {r.rownum} (id={r.id or '?'})"
        try:
            index = int(r.index)
        except ValueError:
            problems.append(f"{where}: index {r.index!r} is not an integer; restore the written index")
            continue
        if index not in expected:
            problems.append(
                f"{where}: index {index} was not among the queries of this cycle; "
                "delete that row or restore the written index"
            )
            continue
        if r.id != expected[index].id:
            problems.append(
                f"{where}: id does not match index {index} (expected {expected[index].id}); "
                "restore the written index and id"
            )
            continue
        if index in seen:
            problems.append(f"{where}: duplicate of row {seen[index]} (index {index}); keep one row per sample")
            continue
        seen[index] = r.rownum
        if not r.label:
            if not partial:
                problems.append(f"{where}: label is empty; fill every label, then re-run")
            continue
        label = labels.parse(r.label)
        if label is None:
            problems.append(
                f"{where}: label {r.label!r} is not one of the {labels.legend()}; fix it, then re-run"
                if labels.by_name_only else
                f"{where}: label {r.label!r} is neither a class id in [0, {labels.num_classes}) "
                f"nor a class name ({labels.legend()}); fix it, then re-run"
            )
            continue
        answers[index] = label
    for index, q in expected.items():
        if index not in seen:
            problems.append(
                f"{csv_path}: no row for index {index} (id={q.id}); add the row back with its label, then re-run"
            )
    if problems:
        more = f" (+{len(problems) - 1} more problem(s) in this file)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
    return answers


def read_answers(csv_path: str | os.PathLike, queries: Sequence[Query], labels: LabelSpace, *,
                 partial: bool = False) -> dict[int, int]:
    """read_rows + validate_rows: the answers in a query CSV, or one UserError line."""
    return validate_rows(csv_path, read_rows(csv_path), queries, labels, partial=partial)


def format_csv(queries: Sequence[Query], labels: LabelSpace, answers: Mapping[int, int]) -> str:
    """THE writer's text: one row per query in query order, `label` = class id or empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for q in queries:
        label = answers.get(int(q.index))
        writer.writerow([int(q.index), q.id, q.selector, format(float(q.score), ".6g"), int(q.predicted),
                         labels.name(int(q.predicted)), "" if label is None else labels.cell(int(label))])
    return buf.getvalue()


def write_answers(csv_path: str | os.PathLike, queries: Sequence[Query], labels: LabelSpace,
                  answers: Mapping[int, int]) -> None:
    """Write the query CSV atomically (readers see the old file or the new one, never a torn one).

    The text is validated by `validate_rows` before it replaces the file, so nothing this writes can be
    rejected by the files oracle later for anything but empty labels."""
    text = format_csv(queries, labels, answers)
    rows = [CsvRow(i + 2, str(int(q.index)), q.id, "" if answers.get(int(q.index)) is None
                   else labels.cell(int(answers[int(q.index)]))) for i, q in enumerate(queries)]
    validate_rows(csv_path, rows, queries, labels, partial=True)
    atomic_write_text(csv_path, text)


@dataclasses.dataclass
class Manifest:
    """`queries/cycle_N.json`: what the annotation page shows, written by the files oracle with the CSV."""

    cycle: int
    class_names: list[str]
    queries: list[Query]
    has_images: bool
    command: list[str] | None = None  # argv that continues training (the same `main` command)
    cwd: str | None = None  # the directory that command ran in (its paths may be relative)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["version"] = MANIFEST_VERSION
        for q in d["queries"]:
            q["selectors"] = list(q["selectors"])
            if q["confidence"] is not None and not np.isfinite(q["confidence"]):
                q["confidence"] = None
        return json.dumps(d, indent=1) + "\n"


def read_manifest(cycle: int, workdir: str | os.PathLike) -> Manifest:
    path = cycle_paths(cycle, workdir).manifest
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        queries = [Query(index=int(q["index"]), id=str(q["id"]), selector=str(q["selector"]),
                         score=float(q["score"]), predicted=int(q["predicted"]),
                         selectors=tuple(str(x) for x in q.get("selectors", ())),
                         confidence=None if q.get("confidence") is None else float(q["confidence"]))
                   for q in d["queries"]]
        return Manifest(cycle=int(d["cycle"]), class_names=[str(c) for c in d["class_names"]], queries=queries,
                        has_images=bool(d["has_images"]), command=d.get("command"), cwd=d.get("cwd"))
    except FileNotFoundError:
        raise UserError(
            f"{path}: missing (queries written by an older version); fill {path.with_suffix('.csv').name} by "
            "hand, or delete it and re-run the main command to write the annotation page's files"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
        raise UserError(f"{path}: unreadable ({describe(e)}); delete the cycle's CSV and re-run the main "
                        "command") from None


def invocation(argv: Sequence[str] | None = None) -> list[str] | None:
    """The command line of this process as something a shell can run again (None if it cannot).

    `python -m boostmis_jax.main` sets argv[0] to the module's file; it is turned back into `-m` so the
    recorded command is the one the person typed, with this interpreter."""
    argv = list(sys.argv if argv is None else argv)
    if not argv or argv[0] in ("", "-c", "-"):
        return None
    prog = Path(argv[0])
    if prog.name == "main.py" and prog.parent.name == "boostmis_jax":
        return [sys.executable, "-m", "boostmis_jax.main", *argv[1:]]
    if prog.suffix == ".py":
        return [sys.executable, str(prog.resolve()), *argv[1:]]
    return [str(prog.resolve()) if prog.exists() else str(prog), *argv[1:]]


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(np.nan_to_num(img.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8) \
            if np.issubdtype(img.dtype, np.floating) else np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    pil = Image.fromarray(img)
    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


class FilesOracle:
    """Human-in-the-loop oracle through files in `workdir/queries/`.

    First call for a cycle: writes `cycle_{cycle}.csv` (+ `.png` contact sheet and `cycle_{cycle}/NNN.png`
    per query when images are given, + `.json` manifest for the annotation page), prints what to do and
    returns None so the caller can exit cleanly. After the person fills the `label` column, the next call
    reads it back, validates every row and returns {index: label}. Nothing is written on the read path, so
    a rejected file stays exactly as the person left it.
    """

    def __init__(self, num_classes: int, class_names: list[str] | None, images: np.ndarray | None,
                 command: Sequence[str] | None = None, cwd: str | os.PathLike | None = None):
        self.labels = LabelSpace(num_classes, class_names)
        self.num_classes = self.labels.num_classes
        self.class_names = self.labels.class_names
        self.images = images
        self.command = list(command) if command is not None else None  # None: this process's argv
        self.cwd = str(cwd) if cwd is not None else None

    @staticmethod
    def paths(cycle: int, workdir: str | os.PathLike) -> tuple[Path, Path]:
        p = cycle_paths(cycle, workdir)
        return p.csv, p.sheet

    # -- writing -----------------------------------------------------------------------------------------
    def _write(self, cycle: int, queries: list[Query], paths: CyclePaths) -> None:
        # Images and manifest first, CSV last and atomically: the CSV's existence marks "queries written".
        has_images = self.images is not None and bool(queries)
        if has_images:
            from boostmis_jax.reporting import contact_sheet

            imgs = np.asarray(self.images)[[q.index for q in queries]]
            captions = [f"{q.id}\npred: {self.labels.name(q.predicted)}" if q.predicted >= 0 else q.id
                        for q in queries]
            contact_sheet(paths.sheet, imgs, captions)
            for pos, img in enumerate(imgs):
                _save_png(paths.image(pos), img)
        manifest = Manifest(cycle=int(cycle), class_names=self.class_names, queries=list(queries),
                            has_images=has_images,
                            command=self.command if self.command is not None else invocation(),
                            cwd=self.cwd if self.cwd is not None else os.getcwd())
        atomic_write_text(paths.manifest, manifest.to_json())
        write_answers(paths.csv, queries, self.labels, {})

    def _instructions(self, paths: CyclePaths, workdir: str | os.PathLike, n: int) -> str:
        lines = [
            f"Active learning picked {n} samples to label. Oracle 'files' is waiting for you:",
            f"  1. open {paths.csv}",
        ]
        if self.images is not None and n:
            lines.append(f"     (thumbnails with ids and current predictions: {paths.sheet})")
        lines += [
            (
                "  2. fill the empty 'label' cell of EVERY row with a "
                + (f"one of the {self.labels.legend()}" if self.labels.by_name_only else
                   f"class id or class name ({self.labels.legend()})")
                + "; leave the other columns as they are"
            ),
            "  3. save it as CSV and re-run the same command; training resumes with your labels",
            f"  or label them in a browser: python -m boostmis_jax.annotate --workdir {shlex.quote(str(workdir))}",
        ]
        return "\n".join(lines)

    # -- reading -----------------------------------------------------------------------------------------
    def answer(self, cycle: int, queries: list[Query], workdir: str | os.PathLike) -> dict[int, int] | None:
        """Write the query files (returns None) or read back the filled CSV (returns {index: label})."""
        paths = cycle_paths(cycle, workdir)
        for p in (paths.csv, paths.manifest, paths.sheet):
            if p.exists() and not p.is_file():
                raise UserError(f"{p}: {kind_of(p)} where this cycle's query file belongs; move it away and "
                                "re-run")
        report_edited(workdir, cycle, self.labels)
        if not paths.csv.exists():
            self._write(cycle, queries, paths)
            print(self._instructions(paths, workdir, len(queries)), flush=True)
            return None
        answers = read_answers(paths.csv, queries, self.labels)
        record = {"answers": {str(k): v for k, v in answers.items()}}
        atomic_write_text(paths.consumed, json.dumps(record) + "\n")
        return answers


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


def ask(name: str, ds, book, queries: Sequence[Query], workdir: Path) -> list | None:
    """One round's questions to the oracle `name` (process 0 asks, every process gets the answers), recorded
    in `book`. None: a person's labels are pending (the files oracle wrote its CSV)."""
    from boostmis_jax import parallel

    oracle = make_oracle(name, train_y=ds.train_y, num_classes=ds.num_classes, class_names=ds.class_names,
                         images=ds.train_x if ds.kind == "image" else None)
    answers = parallel.on_process0(lambda: oracle.answer(book.cycle, queries, workdir))
    answers = parallel.broadcast_answers(answers, [q.index for q in queries])
    if answers is not None:
        book.record_answers([dataclasses.asdict(q) for q in queries], answers)
    return answers
