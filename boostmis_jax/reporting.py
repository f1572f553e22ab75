"""Run outputs a person reads: JSONL metrics, atomic JSON, a progress bar, and PNG plots/contact sheets.

Everything here is host-side and written by process 0 only, so multi-host runs produce one copy of each file.
Files are replaced atomically (`fsutil`: tmp in the same directory + os.replace) so a killed run never leaves
a half-written report behind.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from boostmis_jax.errors import UserError
from boostmis_jax.fsutil import atomic_write, atomic_write_text

__all__ = [
    "Background",
    "MetricsWriter",
    "PhaseTimer",
    "Progress",
    "Throughput",
    "contact_sheet",
    "plot_confusion_matrix",
    "plot_learning_curve",
    "plot_roc",
    "plot_threshold",
    "read_jsonl",
    "read_predictions",
    "roc_curves",
    "to_jsonable",
    "write_json_atomic",
    "write_predictions",
]


class Background:
    """One worker thread for the plots a cycle writes, so that rendering PNGs (0.3-1 s each on a small CPU)
    overlaps the next compile or step instead of holding up the loop: XLA releases the GIL while it compiles
    and runs. Figures here never touch pyplot's global state, so one worker thread is safe. The first failure
    is re-raised in the loop's thread, at the next `submit` or at `wait`/`close`."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="boostmis-plots")
        self._pending: list[Future] = []

    def submit(self, fn: Callable[[], Any]) -> None:
        self._reap(block=False)
        self._pending.append(self._pool.submit(fn))

    def _reap(self, block: bool) -> None:
        done = [f for f in self._pending if block or f.done()]
        self._pending = [f for f in self._pending if f not in done]
        for f in done:
            f.result()  # re-raises the worker's exception here

    def wait(self) -> None:
        """Every submitted job finished; raises the first failure."""
        self._reap(block=True)

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def _is_process0() -> bool:
    """Only the first process writes files; imported lazily so plotting code does not need a jax backend."""
    import jax

    return jax.process_index() == 0


def to_jsonable(value: Any) -> Any:
    """Turn numpy/jax scalars and arrays into plain Python; NaN/inf become None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if hasattr(value, "ndim") and hasattr(value, "tolist"):  # numpy / jax arrays and numpy scalars
        return to_jsonable(np.asarray(value).tolist())
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON: {value!r}")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON via tmp + os.replace so readers never see a torn file (e.g. a run summary on kill)."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def _parse_lines(text: str) -> tuple[list[dict], list[int]]:
    """Parse JSONL text; returns (rows, 1-based line numbers that did not parse to a JSON object)."""
    rows, bad = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad.append(lineno)
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad.append(lineno)
    return rows, bad


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a metrics JSONL file; a corrupt final line (killed mid-write) is skipped, others are errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: metrics file not found; check the workdir path")
    text = path.read_text(encoding="utf-8")
    rows, bad = _parse_lines(text)
    last = len(text.splitlines())
    bad = [b for b in bad if b != last]
    if bad:
        raise UserError(f"{path}: line {bad[0]} is not a JSON object; fix or delete that line")
    return rows


def write_predictions(path: str | os.PathLike, ids: Sequence[str], probs: np.ndarray, class_names: Sequence[str],
                      labels: np.ndarray | None = None) -> None:
    """Per-row predictions as CSV, atomically: id, predicted, predicted_name, prob_<class> per class, and
    label, label_name when the labels are known. Probabilities are float32 in their shortest exact form, so
    two files of the same model's outputs compare equal."""
    import csv
    import io

    probs = np.asarray(probs, np.float32)
    if probs.ndim != 2 or probs.shape != (len(ids), len(class_names)):
        raise ValueError(f"probs must have shape ({len(ids)}, {len(class_names)}), got {probs.shape}")
    names = [str(c) for c in class_names]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "predicted", "predicted_name", *[f"prob_{n}" for n in names],
                *(["label", "label_name"] if labels is not None else [])])
    pred = np.argmax(probs, axis=1) if len(ids) else np.zeros(0, np.int64)
    for i, rid in enumerate(ids):
        row = [rid, int(pred[i]), names[pred[i]], *[str(v) for v in probs[i]]]
        if labels is not None:
            row += [int(labels[i]), names[int(labels[i])]]
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())


def read_predictions(path: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """(ids, probs (N, C) float32, class names) of a `write_predictions` file."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    cols = [i for i, h in enumerate(header) if h.startswith("prob_")]
    probs = np.array([[np.float32(r[i]) for i in cols] for r in rows[1:]], np.float32).reshape(-1, len(cols))
    return [r[0] for r in rows[1:]], probs, [header[i][len("prob_"):] for i in cols]


class MetricsWriter:
    """Append-only JSONL metrics log, one object per line, written by process 0 only.

    Without `resume_step` the file is started fresh. With it, lines with step > resume_step (written after
    the checkpoint we resume from) and any corrupt line are dropped first, atomically, so the resumed run
    re-logs those steps exactly once.
    """

    def __init__(self, path: str | os.PathLike, *, resume_step: int | None = None):
        self.path = Path(path)
        self._file = None
        if not _is_process0():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            rows, _ = _parse_lines(self.path.read_text(encoding="utf-8"))
            kept = [r for r in rows if isinstance(r.get("step"), int) and r["step"] <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (lives until close)
        else:
            self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115

    def write(self, step: int, metrics: dict) -> None:
        """Append {"step": step, **metrics}; values may be numpy/jax scalars or arrays, NaN -> null."""
        if self._file is None:
            return
        row = {"step": int(step)}
        row.update({k: v for k, v in to_jsonable(metrics).items() if k != "step"})
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The phases a run's `timing` always reports (others, e.g. `selfsup`, appear when a run has them).
PHASES = ("compile", "train", "eval", "acquisition", "checkpoint")


class PhaseTimer:
    """Wall seconds per phase of a run, exclusive: time spent in a phase entered inside another (an eval
    inside training) counts for the inner one only, so the phases add up to the time they cover.

    `seconds` is the dict it updates in place (the run's `Book.timing`, so a resumed run keeps counting);
    `record` books a duration measured elsewhere (the first call of a jitted step: its compile) to a phase,
    taking it out of the phase it happened inside."""

    def __init__(self, seconds: dict | None = None):
        self.seconds = {} if seconds is None else seconds
        for k in PHASES:
            self.seconds.setdefault(k, 0.0)
        self._inner: list[float] = []  # per open phase: seconds already booked to phases inside it

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.seconds[name] = self.seconds.get(name, 0.0) + dt - self._inner.pop()
            if self._inner:
                self._inner[-1] += dt

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if self._inner:
            self._inner[-1] += seconds

    def other_than(self, name: str) -> float:
        """Seconds booked so far to every phase but `name` (what to take out of a `name` interval)."""
        return sum(v for k, v in self.seconds.items() if k != name)

    def rounded(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in self.seconds.items()}


class Throughput:
    """`perf/*` keys for a metrics row, from host clocks only (no device sync of its own): call `row(step)`
    when step `step`'s results were just fetched (the loop's late metrics), so the step is done and the
    interval since the previous row covers finished steps. Time the `timer` booked to other phases than
    `train` meanwhile (eval, checkpoint, compile) is taken out of the interval."""

    def __init__(self, step: int, images_per_step: int, timer: PhaseTimer, wall: Callable[[], float]):
        self.images_per_step, self.timer, self.wall = int(images_per_step), timer, wall
        self._mark(step)

    def _mark(self, step: int) -> None:
        self._step, self._t, self._other = int(step), time.perf_counter(), self.timer.other_than("train")

    def row(self, step: int) -> dict[str, float]:
        now, other = time.perf_counter(), self.timer.other_than("train")
        dt = (now - self._t) - (other - self._other)
        n = int(step) - self._step
        out = {"perf/wall_s": round(float(self.wall()), 3)}
        if n > 0 and dt > 0:
            out["perf/steps_per_s"] = round(n / dt, 3)
            out["perf/img_per_s"] = round(n * self.images_per_step / dt, 1)
        self._mark(step)
        return out


class Progress:
    """Progress of a loop: a tqdm bar on a terminal; elsewhere (a log file, CI, a pipe) one plain line every
    `every_pct` percent, so logs stay readable instead of filling with carriage-return redraws.

    Silent on non-zero processes, resumable via `initial`, postfix via update kwargs (`update(0, ...)` only
    sets it). `close` is idempotent and prints nothing, so an error printed after it is the last line.
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "", disable: bool | None = None,
                 plain: bool | None = None, every_pct: float = 5.0, stream=None):
        if disable is None:
            disable = not _is_process0()
        self._stream = stream if stream is not None else sys.stderr
        if plain is None:
            plain = not (hasattr(self._stream, "isatty") and self._stream.isatty())
        self.total, self.desc, self.disable, self.plain = int(total), desc, disable, plain
        self._n, self._postfix, self._closed = int(initial), {}, False
        self._step = max(1, math.ceil(self.total * every_pct / 100.0)) if self.total else 1
        self._next = (self._n // self._step + 1) * self._step
        self._t0, self._n0 = time.time(), self._n
        self._bar = None
        if not disable and not plain:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=self._stream)

    def update(self, n: int = 1, **postfix: Any) -> None:
        if postfix:
            for k, v in postfix.items():
                v = to_jsonable(v)
                self._postfix[k] = f"{v:.4g}" if isinstance(v, float) else v
            if self._bar is not None:
                self._bar.set_postfix(self._postfix, refresh=False)
        self._n += n
        if self._bar is not None:
            self._bar.update(n)
        elif not self.disable and not self._closed and n and (self._n >= self._next or self._n == self.total):
            self._next = (self._n // self._step + 1) * self._step
            self._line()

    def _line(self) -> None:
        pct = 100.0 * self._n / self.total if self.total else 100.0
        rate = (self._n - self._n0) / max(time.time() - self._t0, 1e-9)
        post = "".join(f" {k}={v}" for k, v in self._postfix.items())
        head = f"{self.desc}: " if self.desc else ""
        print(f"{head}{self._n}/{self.total} ({pct:.0f}%) {rate:.1f} it/s{post}", file=self._stream, flush=True)

    @property
    def n(self) -> int:
        return self._n

    def close(self) -> None:
        if self._bar is not None and not self._closed:
            self._bar.close()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _new_figure(figsize: tuple[float, float]):
    """A pyplot-free Figure: renders headless with Agg and never touches the global backend or figure list."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path: str | os.PathLike) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")


def plot_learning_curve(
    path: str | os.PathLike,
    rows: list[dict],
    *,
    x: str = "labeled",
    y: str = "test/macro_f1",
    series_key: str = "method",
) -> None:
    """PNG of `y` against `x`, one line per value of `series_key` (rows lacking x or y are skipped)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        xv, yv = row.get(x), row.get(y)
        if xv is None or yv is None:
            continue
        xv, yv = float(to_jsonable(xv)), to_jsonable(yv)
        if yv is None:  # NaN
            continue
        series.setdefault(str(row.get(series_key, "")), []).append((xv, float(yv)))

    fig = _new_figure((6.4, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for name in sorted(series):
        pts = sorted(series[name])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name or None)
    if not series:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    if any(series):
        ax.legend(title=series_key)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{y} vs {x}")
    ax.grid(True, alpha=0.3)
    _save_figure(fig, path)


def plot_confusion_matrix(path: str | os.PathLike, cm: list[list[int]], class_names: Sequence[str]) -> None:
    """PNG heat map of a confusion matrix (rows=true, cols=predicted) with the count in every cell."""
    arr = np.asarray(cm, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] != len(class_names):
        raise ValueError(f"cm must be {len(class_names)}x{len(class_names)}, got shape {arr.shape}")
    k = arr.shape[0]
    side = max(3.5, 0.6 * k + 2.0)
    fig = _new_figure((side + 1.0, side))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(arr, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    names = [str(c) for c in class_names]
    ax.set_xticks(range(k), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=names)
    threshold = arr.max() / 2 if arr.size else 0
    for i in range(k):
        for j in range(k):
            color = "white" if arr[i, j] > threshold else "black"
            ax.text(j, i, str(arr[i, j]), ha="center", va="center", color=color, fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix")
    _save_figure(fig, path)


def roc_curves(probs: np.ndarray, y: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """One-vs-rest ROC per class: {"name", "fpr", "tpr", "auc"}; fpr/tpr None and auc NaN for a class with no
    positive or no negative example in `y` (its curve is undefined)."""
    from boostmis_jax.evaluate import roc_auc, roc_curve

    probs, y = np.asarray(probs, np.float64), np.asarray(y).reshape(-1)
    k = len(class_names)
    if probs.ndim != 2 or probs.shape != (len(y), k):
        raise ValueError(f"probs must have shape ({len(y)}, {k}), got {probs.shape}")
    out = []
    for c, name in enumerate(class_names):
        positive = y == c
        if not positive.any() or positive.all() or not np.all(np.isfinite(probs[:, c])):
            out.append({"name": str(name), "fpr": None, "tpr": None, "auc": float("nan")})
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, c])
        out.append({"name": str(name), "fpr": fpr, "tpr": tpr, "auc": roc_auc(positive, probs[:, c])})
    return out


def plot_roc(path: str | os.PathLike, probs: np.ndarray, y: np.ndarray, class_names: Sequence[str]) -> None:
    """PNG of one one-vs-rest ROC curve per class, its AUC in the legend (the figure readers look at first).

    A class with no positive (or no negative) example in `y` has no curve; the legend says so."""
    curves = roc_curves(probs, y, class_names)
    fig = _new_figure((5.6, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    for cur in curves:
        if cur["fpr"] is None:
            ax.plot([], [], label=f"{cur['name']} (no curve: one-sided)")
        else:
            ax.plot(cur["fpr"], cur["tpr"], linewidth=1.6, label=f"{cur['name']} (AUC {cur['auc']:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(f"ROC, one class vs rest ({len(np.asarray(y).reshape(-1))} examples)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, alpha=0.3)
    _save_figure(fig, path)


def plot_threshold(path: str | os.PathLike, rows: list[dict], cycle_steps: Sequence[int] = ()) -> None:
    """PNG of the threshold tau (`train/threshold`), the mask rate (`train/mask_rate`) and the learning status
    (`train/learning_status`) against the step, from metrics.jsonl rows, cycle boundaries as dashed lines."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        step = row.get("step")
        for key in ("train/threshold", "train/mask_rate", "train/learning_status"):
            value = to_jsonable(row.get(key))
            if step is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(key, []).append((float(step), float(value)))
    last = max((pt[0] for pts in series.values() for pt in pts), default=None)
    cycle_steps = [b for b in cycle_steps if last is None or float(b) < last]  # not the right edge itself
    fig = _new_figure((7.2, 5.2))
    top = fig.add_subplot(2, 1, 1)
    bottom = fig.add_subplot(2, 1, 2, sharex=top)
    for ax, keys in ((top, ("train/threshold", "train/mask_rate")), (bottom, ("train/learning_status",))):
        for key in keys:
            pts = sorted(series.get(key, []))
            if pts:
                label = {"train/threshold": "threshold tau", "train/mask_rate": "mask rate (pseudo-labeled)",
                         "train/learning_status": "learning status"}[key]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], linewidth=1.3, label=label)
        for b in cycle_steps:
            ax.axvline(float(b), color="0.5", linestyle="--", linewidth=0.8)
        ax.grid(True, alpha=0.3)
        if any(series.get(k) for k in keys):
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    top.set_ylabel("tau / mask rate")
    top.set_title("adaptive threshold" + (" (dashed: cycle boundaries)" if len(cycle_steps) else ""))
    bottom.set_ylabel("learning status")
    bottom.set_xlabel("step")
    _save_figure(fig, path)


def _to_uint8(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        return (np.clip(np.nan_to_num(images), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if np.issubdtype(images.dtype, np.integer) or images.dtype == bool:
        return np.clip(images, 0, 255).astype(np.uint8)
    raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")


def _fit_text(draw, text: str, font, width: int) -> str:
    """Shorten `text` with an ellipsis so it fits under its tile instead of spilling into the next one."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def contact_sheet(
    path: str | os.PathLike,
    images: np.ndarray,
    captions: list[str],
    *,
    cols: int = 8,
    scale: int = 0,
) -> None:
    """PNG grid of images with a caption under each, so a person can review picked samples at a glance.

    images: (N, H, W, C) with C in {1, 3} (or (N, H, W)), uint8 or float in [0, 1]. Small images are
    upscaled with nearest-neighbour (scale 0 = smallest integer factor making a tile >= 96 px) so that
    28x28 MedMNIST-style images stay readable. Captions may contain "\\n" for several lines.
    """
    from PIL import Image, ImageDraw, ImageFont

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape (N, H, W, C) with C in (1, 3), got {images.shape}")
    n, h, w, c = images.shape
    if n == 0:
        raise ValueError("contact_sheet needs at least one image")
    if len(captions) != n:
        raise ValueError(f"got {n} images but {len(captions)} captions")
    if cols < 1 or scale < 0:
        raise ValueError(f"cols must be >= 1 and scale >= 0, got cols={cols}, scale={scale}")
    if scale == 0:
        scale = max(1, math.ceil(96 / min(h, w)))
    images = _to_uint8(images)

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    _, top, _, bottom = probe.textbbox((0, 0), "Ag|", font=font)
    line_h = bottom - top + 3
    lines = [str(cap).split("\n") for cap in captions]
    cap_h = line_h * max(len(ls) for ls in lines) + 4
    tile_w, tile_h = w * scale, h * scale
    pad = 6
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    sheet = Image.new("RGB", (pad + cols * (tile_w + pad), pad + rows * (tile_h + cap_h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        img = images[i, ..., 0] if c == 1 else images[i]
        tile = Image.fromarray(img, mode="L" if c == 1 else "RGB").convert("RGB")
        if scale != 1:
            tile = tile.resize((tile_w, tile_h), Image.NEAREST)
        x0 = pad + (i % cols) * (tile_w + pad)
        y0 = pad + (i // cols) * (tile_h + cap_h + pad)
        sheet.paste(tile, (x0, y0))
        for j, line in enumerate(lines[i]):
            draw.text((x0, y0 + tile_h + 2 + j * line_h - top), _fit_text(draw, line, font, tile_w),
                      fill="black", font=font)
    atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"), suffix=".png")
