"""Metrics against hand-computed confusion matrices."""

import math

import numpy as np
import pytest

from segmix.eval.metrics import ConfusionMatrix, score_masks

NAMES = ["A", "B", "C", "bg"]


def test_hand_computed_example_with_background_excluded():
    # 3 tissue classes + background (3), background excluded from scoring.
    truth = np.array([[0, 0, 1, 1], [0, 2, 1, 3], [3, 3, 255, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 3, 0], [0, 1, 2, 2]])
    cm = ConfusionMatrix(4, NAMES, exclude_index=3)
    cm.update(pred, truth)
    s = cm.compute()
    # scored pixels: truth in {0,1,2}: (0,0),(0,1),(0,2),(0,3),(1,0),(1,1),(1,2),(2,3) = 8
    # class A: truth at (0,0),(0,1),(1,0); pred A there at (0,0),(1,0) -> TP 2, FN 1;
    #          FP: pred A on scored pixels with other truth: none -> IoU 2/3
    # class B: truth (0,2),(0,3),(1,2); pred B at (0,2),(0,3) TP 2; (1,2) predicted bg -> FN;
    #          FP: (0,1) truth A pred B -> IoU 2/4
    # class C: truth (1,1),(2,3); both predicted C -> TP 2, no FP on scored pixels -> IoU 1
    assert s.classes == ["A", "B", "C"]
    np.testing.assert_allclose(s.iou, [2 / 3, 2 / 4, 1.0])
    np.testing.assert_allclose(s.dice, [4 / 5, 4 / 6, 1.0])
    assert s.miou == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert s.fwiou == pytest.approx(3 / 8 * 2 / 3 + 3 / 8 * 0.5 + 2 / 8 * 1.0)
    assert s.pixel_accuracy == pytest.approx(6 / 8)
    assert s.pixels == 8


def test_absent_classes_are_nan_and_left_out_of_means():
    truth = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 1])
    s = ConfusionMatrix(4, NAMES, exclude_index=3)
    s.update(pred, truth)
    out = s.compute()
    assert math.isnan(out.iou[2]) and math.isnan(out.dice[2])
    assert out.miou == 1.0 and out.fwiou == 1.0
    assert out.as_dict()["per_class"]["C"] is None


def test_class_predicted_but_absent_from_truth_scores_zero():
    out = score_masks([(np.array([0, 2]), np.array([0, 0]))], 4, NAMES, 3)
    assert out.iou[2] == 0.0 and out.iou[0] == pytest.approx(0.5)
    assert out.miou == pytest.approx(0.25)  # B is NaN; mean of A=0.5 and C=0


def test_streaming_equals_one_shot_and_no_exclusion():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (5, 8, 8))
    pred = rng.integers(0, 4, (5, 8, 8))
    one = ConfusionMatrix(4, NAMES)
    one.update(pred, truth)
    streamed = ConfusionMatrix(4, NAMES)
    for p, t in zip(pred, truth):
        streamed.update(p, t)
    np.testing.assert_array_equal(one.matrix, streamed.matrix)
    assert one.matrix.sum() == truth.size
    assert len(one.compute().iou) == 4


def test_unassigned_prediction_is_a_miss_but_no_false_positive():
    out = score_masks([(np.array([0, 255, 1, 1]), np.array([0, 0, 1, 1]))], 4, NAMES, 3)
    assert out.iou[0] == pytest.approx(0.5) and out.iou[1] == 1.0 and out.pixel_accuracy == pytest.approx(0.75)


def test_bad_shapes_and_values_raise():
    cm = ConfusionMatrix(4, NAMES, 3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="predicted index out of range"):
        cm.update(np.array([9]), np.array([0]))
    with pytest.raises(ValueError, match="class names"):
        ConfusionMatrix(4, ["A"])
