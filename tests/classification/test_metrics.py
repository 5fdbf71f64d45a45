import numpy as np
import pytest

from lungaudit.classification.metrics import classification_report, confusion_matrix, macro_f1, per_class_metrics


def test_confusion_and_per_class_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    m = per_class_metrics(cm)
    # class 0: TP=2 FN=1 FP=0 TN=3
    assert m["sensitivity"][0] == pytest.approx(2 / 3)
    assert m["specificity"][0] == pytest.approx(1.0)
    assert m["ppv"][0] == pytest.approx(1.0)
    assert m["npv"][0] == pytest.approx(3 / 4)
    assert m["f1"][0] == pytest.approx(0.8)
    # class 1: TP=1 FN=1 FP=1 TN=3 ; class 2: TP=1 FN=0 FP=1 TN=4
    assert m["f1"][1] == pytest.approx(0.5)
    assert m["f1"][2] == pytest.approx(2 / 3)
    assert macro_f1(y_true, y_pred, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_zero_denominator_is_nan_not_zero():
    m = per_class_metrics(confusion_matrix(np.array([0, 0]), np.array([0, 0]), 2))
    assert np.isnan(m["sensitivity"][1]) and np.isnan(m["ppv"][1])


def test_report_auc_and_shapes():
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    r = classification_report(y, probs, ["a", "b"])
    assert r["accuracy"] == pytest.approx(0.75)
    # class b scores: positives {0.6, 0.65}, negatives {0.1, 0.8}: 2 of 4 pairs ordered right
    assert r["per_class"]["b"]["auc"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        classification_report(y, probs[:, :1], ["a", "b"])
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 2)
