"""The study's figures: budget curves with 95% CI bands, and the confusion matrix of each arm's median run."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from boostmis_jax.study.report import METRIC_NAMES, by_method, median_run


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    from boostmis_jax.fsutil import atomic_write

    fig.tight_layout(h_pad=1.5)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")


def curve_band(rs: list[dict], metric: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """(mean labels, mean, lower, upper) per cycle over the runs: the band is the paired-free 95% t interval
    of the mean over seeds (the mean itself where only one seed has the cycle)."""
    from scipy.stats import t as student_t

    width = max(len(r.get("curve") or []) for r in rs)
    xs, ys, lo, hi = [], [], [], []
    for i in range(width):
        pts = [r["curve"][i] for r in rs if len(r.get("curve") or []) > i]
        v = np.asarray([p["test"][metric] for p in pts if p.get("test", {}).get(metric) is not None
                        and math.isfinite(p["test"][metric])], np.float64)
        if not v.size:
            continue
        half = 0.0
        if v.size > 1:
            half = float(student_t.ppf(0.975, v.size - 1)) * v.std(ddof=1) / math.sqrt(v.size)
        xs.append(float(np.mean([p["labeled"] for p in pts])))
        ys.append(float(v.mean()))
        lo.append(float(v.mean()) - half)
        hi.append(float(v.mean()) + half)
    return xs, ys, lo, hi


def plot_curves(path: Path, runs: list[dict], order: list[str], metric: str) -> None:
    """Test `metric` against labels, one line per arm (mean over seeds) with its 95% CI band; an arm
    without rounds (full_supervised) a dashed line."""
    groups = by_method(runs)
    fig = _figure((7.5, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    for m in [m for m in order if m in groups]:
        xs, ys, lo, hi = curve_band(groups[m], metric)
        if not ys:
            continue
        if len(xs) == 1:
            ax.axhline(ys[0], ls="--", color="gray", label=f"{m} ({int(xs[0])} labels)")
            continue
        (line,) = ax.plot(xs, ys, marker="o", label=m)
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("labeled samples")
    ax.set_ylabel(f"test {METRIC_NAMES.get(metric, metric)} (mean, 95% CI over seeds)")
    ax.set_title(f"budget curves: test {METRIC_NAMES.get(metric, metric)}")
    ax.grid(True, alpha=0.3)
    if groups:
        ax.legend(fontsize=8, loc="best")
    _save(fig, path)


def plot_confusions(path: Path, runs: list[dict], order: list[str], class_names: list[str]) -> None:
    """One panel per method: the test confusion matrix of its median run by test balanced accuracy."""
    groups = by_method(runs)
    methods = [m for m in order if m in groups]
    if not methods:
        return
    cols = min(4, len(methods))
    rows = math.ceil(len(methods) / cols)
    k = len(class_names)
    side = max(2.8, 0.35 * k + 1.6)
    fig = _figure((cols * side, rows * side + 0.3))
    for j, m in enumerate(methods):
        r = median_run(groups[m])
        cm = np.asarray(r["test"]["confusion_matrix"], np.int64)
        ax = fig.add_subplot(rows, cols, j + 1)
        ax.imshow(cm, cmap="Blues", vmin=0)
        for a in range(cm.shape[0]):
            for b in range(cm.shape[1]):
                ax.text(b, a, str(cm[a, b]), ha="center", va="center", fontsize=7 if k > 4 else 9,
                        color="white" if cm[a, b] > cm.max() / 2 else "black")
        ax.set_xticks(range(k), labels=class_names, fontsize=7, rotation=45 if k > 4 else 0)
        ax.set_yticks(range(k), labels=class_names, fontsize=7)
        ax.set_title(f"{m}\nseed {r['seed']}, bal. acc. {r['test']['balanced_accuracy']:.3f}", fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    _save(fig, path)
