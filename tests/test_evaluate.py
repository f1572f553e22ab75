"""Metrics against hand-computed values (padding for sharded eval lives in parallel.pad_rows)."""
import json
import math

import numpy as np
import pytest

from boostmis_jax.evaluate import classification_metrics


def _onehotish(preds, num_classes, conf=0.8):
    p = np.full((len(preds), num_classes), (1 - conf) / (num_classes - 1))
    p[np.arange(len(preds)), preds] = conf
    return p


def test_three_class_hand_computed():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    preds = np.array([0, 0, 1, 1, 2, 2, 2, 0, 2])
    m = classification_metrics(_onehotish(preds, 3), labels, 3)
    # cm rows=true, cols=pred
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert m["num_examples"] == 9
    assert m["accuracy"] == pytest.approx(6 / 9)
    assert m["per_class_recall"] == pytest.approx([2 / 3, 1 / 2, 3 / 4])
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)
    prec = [2 / 3, 1 / 2, 3 / 4]  # column sums 3, 2, 4
    rec = [2 / 3, 1 / 2, 3 / 4]
    f1 = [2 * p * r / (p + r) for p, r in zip(prec, rec)]
    assert m["macro_precision"] == pytest.approx(np.mean(prec))
    assert m["macro_recall"] == pytest.approx(np.mean(rec))
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert 0.0 <= m["auc"] <= 1.0
    json.dumps(m)  # plain python types only
    assert all(type(v) is float for v in m["per_class_recall"])
    assert all(type(v) is int for row in m["confusion_matrix"] for v in row)


def test_zero_division_is_zero():
    # class 2 never predicted -> precision 0 (not nan); class 1 absent in labels -> recall 0 in macro
    labels = np.array([0, 0, 2])
    preds = np.array([0, 1, 0])
    m = classification_metrics(_onehotish(preds, 3), labels, 3)
    assert m["per_class_recall"] == pytest.approx([0.5, 0.0, 0.0])
    assert m["macro_precision"] == pytest.approx((1 / 2 + 0 + 0) / 3)
    # balanced accuracy averages over present classes (0 and 2) only
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.0) / 2)


def test_auc_binary_hand_computed():
    labels = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    probs = np.stack([1 - p1, p1], axis=1)
    # pairs (neg, pos): (0.1,.35) ok, (0.1,.8) ok, (.4,.35) wrong, (.4,.8) ok -> 3/4
    assert classification_metrics(probs, labels, 2)["auc"] == pytest.approx(0.75)


def test_auc_multiclass_with_missing_class():
    # class 1 absent from labels -> average one-vs-rest AUC over classes 0 and 2 only
    labels = np.array([0, 0, 2, 2])
    probs = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.3, 0.3, 0.4],
            [0.5, 0.1, 0.4],
            [0.1, 0.1, 0.8],
        ]
    )
    # class 0 scores: pos {.7,.3}, neg {.5,.1}: pairs .7>.5 .7>.1 .3<.5 .3>.1 -> 3/4
    # class 2 scores: pos {.4,.8}, neg {.1,.4}: .4>.1, .4=.4 (0.5), .8>.1, .8>.4 -> 3.5/4
    m = classification_metrics(probs, labels, 3)
    assert m["auc"] == pytest.approx((0.75 + 0.875) / 2)
    assert not math.isnan(m["auc"])


def test_auc_nan_with_single_class_and_nonfinite():
    probs = _onehotish(np.array([0, 1, 0]), 3)
    assert math.isnan(classification_metrics(probs, np.array([1, 1, 1]), 3)["auc"])
    bad = probs.copy()
    bad[0, 0] = np.nan
    assert math.isnan(classification_metrics(bad, np.array([0, 1, 2]), 3)["auc"])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        classification_metrics(np.zeros((3, 2)), np.zeros(3, int), 3)
    with pytest.raises(ValueError):
        classification_metrics(np.zeros((3, 3)), np.array([0, 1, 3]), 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_curve_and_auc_equal_sklearn_with_ties(seed):
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc_curve

    from boostmis_jax.evaluate import roc_auc, roc_curve

    rng = np.random.default_rng(seed)
    positive = rng.random(300) < 0.3
    score = np.round(rng.random(300) + 0.3 * positive, 1)  # rounded: many tied scores
    fpr, tpr, thr = roc_curve(positive, score)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(positive, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_array_equal(thr[1:], sk_thr[1:])  # the first is +inf here, max + 1 in older sklearn
    assert roc_auc(positive, score) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)


# ------------------------------------------------------------------ the study's metrics
def test_minority_recall_and_auprc_match_sklearn():
    from sklearn.metrics import average_precision_score, recall_score

    from boostmis_jax.evaluate import classification_metrics, minority_class

    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 300)
    probs = rng.dirichlet(np.ones(3), 300)
    probs[np.arange(300), y] += 0.3 * rng.random(300)
    probs = np.round(probs / probs.sum(1, keepdims=True), 2)      # rounded: ties in the scores
    probs /= probs.sum(1, keepdims=True)
    train_y = np.r_[np.zeros(50), np.ones(5), np.full(30, 2)].astype(int)
    assert minority_class(train_y, 3) == 1
    m = classification_metrics(probs, y, 3, minority=1)
    assert m["minority_class"] == 1
    want = recall_score(y, probs.argmax(1), labels=[1], average=None)[0]
    assert m["minority_recall"] == pytest.approx(want)
    assert m["minority_auprc"] == pytest.approx(average_precision_score(y == 1, probs[:, 1]))
    rarest_in_test = int(np.argmin(np.bincount(y, minlength=3)))
    assert classification_metrics(probs, y, 3)["minority_class"] == rarest_in_test


def test_expected_calibration_error_by_hand():
    from boostmis_jax.evaluate import expected_calibration_error

    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    # bins of width 1/15: {0.95, 0.95} acc 0.5 conf 0.95; {0.6} acc 1; {0.7} acc 1
    want = 2 / 4 * abs(0.5 - 0.95) + 1 / 4 * abs(1 - 0.6) + 1 / 4 * abs(1 - 0.7)
    assert expected_calibration_error(probs, labels) == pytest.approx(want)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, np.array([0, 1])) == 0.0


def test_macro_f1_at_the_validation_threshold():
    """Binary: the threshold is chosen on validation and applied to test; under a prior shift it moves off
    0.5. Multi-class: argmax macro-F1, no threshold."""
    from sklearn.metrics import f1_score

    from boostmis_jax.evaluate import threshold_metrics

    val_p1 = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.8, 0.9])
    val_y = np.array([0, 0, 0, 1, 1, 1, 1, 1])                       # positives start at 0.35
    test_p1 = np.array([0.05, 0.32, 0.38, 0.42, 0.6, 0.95])
    test_y = np.array([0, 0, 1, 1, 1, 1])
    two = lambda p: np.stack([1 - p, p], 1)                           # noqa: E731
    out = threshold_metrics(two(val_p1), val_y, two(test_p1), test_y, 2)
    assert 0.3 < out["val_threshold"] < 0.35
    want = f1_score(test_y, (test_p1 > out["val_threshold"]).astype(int), average="macro")
    assert out["macro_f1_val_threshold"] == pytest.approx(want) == pytest.approx(1.0)
    assert f1_score(test_y, (test_p1 > 0.5).astype(int), average="macro") < 1.0     # argmax is worse here
    rng = np.random.default_rng(0)
    p3, y3 = rng.dirichlet(np.ones(3), 40), rng.integers(0, 3, 40)
    multi = threshold_metrics(p3, y3, p3, y3, 3)
    assert multi["val_threshold"] is None
    assert multi["macro_f1_val_threshold"] == pytest.approx(f1_score(y3, p3.argmax(1), average="macro",
                                                                     labels=[0, 1, 2], zero_division=0))
