"""Run outputs a person reads: JSONL metrics, atomic JSON, a progress bar, and PNG plots/contact sheets.

Everything here is host-side and written by process 0 only, so multi-host runs produce one copy of each file.
Files are replaced atomically (tmp in the same directory + os.replace) so a killed run never leaves a
half-written report behind.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from boostmis_jax.errors import UserError

__all__ = [
    "MetricsWriter",
    "Progress",
    "contact_sheet",
    "plot_confusion_matrix",
    "plot_learning_curve",
    "read_jsonl",
    "to_jsonable",
    "write_json_atomic",
]


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


def _atomic_write(path: Path, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Call write(tmp_path) then os.replace it over `path`; the tmp file lives in the same dir (same fs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON via tmp + os.replace so readers never see a torn file (e.g. a run summary on kill)."""
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    _atomic_write(Path(path), _write)


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
            text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept)

            def _write(tmp: str) -> None:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)

            _atomic_write(self.path, _write)
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


class Progress:
    """Thin tqdm wrapper: silent on non-zero processes, resumable via `initial`, postfix via update kwargs."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", disable: bool | None = None):
        from tqdm import tqdm

        if disable is None:
            disable = not _is_process0()
        self._bar = tqdm(total=total, initial=initial, desc=desc, disable=disable, dynamic_ncols=True)

    def update(self, n: int = 1, **postfix: Any) -> None:
        if postfix:
            clean = {}
            for k, v in postfix.items():
                v = to_jsonable(v)
                clean[k] = f"{v:.4g}" if isinstance(v, float) else v
            self._bar.set_postfix(clean, refresh=False)
        self._bar.update(n)

    @property
    def n(self) -> int:
        return int(self._bar.n)

    def close(self) -> None:
        self._bar.close()

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
    _atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")


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
    _atomic_write(Path(path), lambda tmp: sheet.save(tmp, format="PNG"), suffix=".png")
