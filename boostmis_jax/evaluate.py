"""Evaluation: sharded, padded prediction over a split, and host-side metrics on the gathered outputs.

Metrics are computed in numpy on gathered predictions: eval runs once per cycle, so clarity beats speed, and
every value comes back as a plain Python number so it can go straight into JSON. ROC and AUC follow
scikit-learn's definitions (tests check them against it) without importing it: that import alone is ~1.3 s of a
cold start.
"""
from __future__ import annotations

import numpy as np

__all__ = ["average_precision", "classification_metrics", "expected_calibration_error", "minority_class",
           "predict_split", "roc_auc", "roc_curve", "threshold_metrics"]

ECE_BINS = 15


def predict_split(predict_probs, variables, x: np.ndarray, *, batch: int, mesh) -> np.ndarray:
    """(N, C) probabilities of every row of `x`: fixed-size batches (one compile), padded and sharded over
    the mesh, padding dropped. `predict_probs(variables, x) -> probs` must return replicated outputs, so
    every process sees all rows."""
    import jax

    from boostmis_jax import parallel

    probs = []
    for s in range(0, len(x), batch):
        xb, mask = parallel.pad_rows(x[s:s + batch], batch)
        p = predict_probs(variables, parallel.put_global(xb, mesh))
        probs.append(np.asarray(jax.device_get(p))[mask])
    return np.concatenate(probs)


def _safe_div(num: float, den: float) -> float:
    """sklearn's zero_division=0 convention: an undefined ratio counts as 0, not NaN."""
    return float(num) / float(den) if den else 0.0


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of a binary problem, one point per distinct score from the highest down, after
    (0, 0) at threshold +inf: scikit-learn's `roc_curve(..., drop_intermediate=False)`. Needs at least one
    positive and one negative."""
    positive = np.asarray(positive, bool).reshape(-1)
    score = np.asarray(score, np.float64).reshape(-1)
    order = np.argsort(score, kind="mergesort")[::-1]
    score, positive = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]  # the last row of each distinct score
    tps = np.cumsum(positive, dtype=np.float64)[last]
    fps = 1.0 + last - tps
    return np.r_[0.0, fps] / fps[-1], np.r_[0.0, tps] / tps[-1], np.r_[np.inf, score[last]]


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under `roc_curve` by the trapezoid rule (ties count one half), as scikit-learn's roc_auc_score."""
    fpr, tpr, _ = roc_curve(positive, score)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def _auc(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """ROC-AUC that degrades to NaN instead of raising.

    Binary: AUC of probs[:, 1]. Multi-class: one-vs-rest AUC averaged over the classes that occur in
    `labels` (a class with no positives has no defined AUC, so it is left out rather than poisoning the mean).
    Fewer than two classes present, or non-finite probabilities (a diverged model), give NaN.
    """
    present = np.unique(labels)
    if present.size < 2 or not np.all(np.isfinite(probs)):
        return float("nan")
    if num_classes == 2:
        return roc_auc(labels == 1, probs[:, 1])
    scores = [roc_auc(labels == c, probs[:, c]) for c in present]
    return float(np.mean(scores))


def minority_class(train_labels: np.ndarray, num_classes: int, fallback: np.ndarray | None = None) -> int:
    """The rarest class of the known training labels (the lowest index on ties; an absent class counts 0).
    Unknown labels (< 0: an unlabeled folder) are skipped; with none known, `fallback`'s labels decide."""
    y = np.asarray(train_labels, np.int64).reshape(-1)
    y = y[y >= 0]
    if y.size == 0 and fallback is not None:
        y = np.asarray(fallback, np.int64).reshape(-1)
        y = y[y >= 0]
    return int(np.argmin(np.bincount(y, minlength=num_classes)))


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as scikit-learn's average_precision_score: sum over distinct
    score thresholds (highest first) of (R_n - R_{n-1}) P_n. NaN without a positive."""
    positive = np.asarray(positive, bool).reshape(-1)
    score = np.asarray(score, np.float64).reshape(-1)
    if not positive.any():
        return float("nan")
    order = np.argsort(score, kind="mergesort")[::-1]
    score, positive = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    tps = np.cumsum(positive, dtype=np.float64)[last]
    precision = tps / (last + 1.0)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the confidence range [0, 1] in `bins` equal bins (right-closed), sum over bins of
    (rows in bin / N) x |accuracy - mean confidence|. NaN for no rows or non-finite probabilities."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0 or not np.all(np.isfinite(probs)):
        return float("nan")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() / labels.size * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def _macro_f1(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, preds), 1)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    f1 = [_safe_div(2 * tp[c], support[c] + predicted[c]) for c in range(num_classes)]
    return float(np.mean(f1))


def threshold_metrics(val_probs: np.ndarray, val_labels: np.ndarray, test_probs: np.ndarray,
                      test_labels: np.ndarray, num_classes: int) -> dict:
    """Macro-F1 at a decision threshold chosen on validation. Binary: the threshold on p(class 1) that
    maximises validation macro-F1 (candidates: midpoints between sorted distinct validation scores and
    0.5; the lowest on ties) applied to the test rows; `val_threshold` records it. Multi-class: no single
    threshold exists, so this is argmax macro-F1 (`val_threshold` None): a per-class bias chosen on a
    small validation split overfits it."""
    test_labels = np.asarray(test_labels, np.int64).reshape(-1)
    val_labels = np.asarray(val_labels, np.int64).reshape(-1)
    if num_classes != 2 or not test_labels.size or not val_labels.size \
            or not (np.all(np.isfinite(val_probs)) and np.all(np.isfinite(test_probs))):
        preds = np.argmax(test_probs, axis=1) if test_labels.size else test_labels
        nan = float("nan")
        return {"macro_f1_val_threshold": _macro_f1(test_labels, preds, num_classes) if test_labels.size
                else nan, "val_threshold": None}
    s = np.unique(np.asarray(val_probs, np.float64)[:, 1])
    candidates = np.unique(np.r_[0.5, (s[1:] + s[:-1]) / 2.0, s[0] - 1e-9, s[-1] + 1e-9])
    p1 = np.asarray(val_probs)[:, 1]
    scores = [_macro_f1(val_labels, (p1 > t).astype(np.int64), 2) for t in candidates]
    t = float(candidates[int(np.argmax(scores))])
    preds = (np.asarray(test_probs)[:, 1] > t).astype(np.int64)
    return {"macro_f1_val_threshold": _macro_f1(test_labels, preds, 2), "val_threshold": t}


def classification_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int,
                           minority: int | None = None) -> dict:
    """Accuracy, balanced accuracy, macro P/R/F1 (zero_division=0), ROC-AUC, per-class recall, confusion,
    and for the `minority` class (the caller passes train's rarest; default: the rarest in `labels`) its
    recall and AUPRC (average precision of its probability), plus the top-label ECE (15 bins).

    Macro precision/recall/F1 and `per_class_recall` cover all `num_classes` classes (an absent class counts
    as 0, like sklearn with `labels=range(C)`), while balanced accuracy and AUC average only over the classes
    present in `labels`, which is what those metrics mean. The confusion matrix has rows=true, cols=predicted.
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probs must have shape (N, {num_classes}), got {probs.shape}")
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs has {probs.shape[0]} rows but labels has {labels.shape[0]}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")

    n = int(labels.shape[0])
    preds = np.argmax(probs, axis=1) if n else np.zeros((0,), np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)

    support = cm.sum(axis=1)  # true count per class
    predicted = cm.sum(axis=0)  # predicted count per class
    tp = np.diag(cm)
    recall = [_safe_div(tp[c], support[c]) for c in range(num_classes)]
    precision = [_safe_div(tp[c], predicted[c]) for c in range(num_classes)]
    f1 = [_safe_div(2 * p * r, p + r) for p, r in zip(precision, recall)]
    present = [c for c in range(num_classes) if support[c] > 0]
    if minority is None:
        minority = int(min(present, key=lambda c: (support[c], c))) if present else 0
    minority = int(minority)

    nan = float("nan")
    return {
        "accuracy": _safe_div(tp.sum(), n) if n else nan,
        "balanced_accuracy": float(np.mean([recall[c] for c in present])) if present else nan,
        "macro_precision": float(np.mean(precision)) if n else nan,
        "macro_recall": float(np.mean(recall)) if n else nan,
        "macro_f1": float(np.mean(f1)) if n else nan,
        "auc": _auc(probs, labels, num_classes) if n else nan,
        "minority_class": minority,
        "minority_recall": recall[minority] if n else nan,
        "minority_auprc": average_precision(labels == minority, probs[:, minority])
        if n and np.all(np.isfinite(probs)) else nan,
        "ece": expected_calibration_error(probs, labels) if n else nan,
        "per_class_recall": [float(r) for r in recall],
        "confusion_matrix": [[int(v) for v in row] for row in cm],
        "num_examples": n,
    }
