"""Evaluation utilities: agreement statistics, failure ranking, detection and correction curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from SegQCLib.errors import InputError
from SegQCLib.quality import evaluation, metrics

# ------------------------------------------------------------------------------------- agreement


def test_mae_is_the_mean_absolute_difference_and_skips_nan_pairs():
    assert evaluation.mae([0.9, 0.5, np.nan, 0.2], [0.8, 0.7, 0.1, np.nan]) == pytest.approx((0.1 + 0.2) / 2)
    assert math.isnan(evaluation.mae([np.nan], [0.3]))


def test_pearson_r_of_linear_data_is_one_and_of_reversed_data_minus_one():
    x = np.linspace(0.1, 0.95, 30)
    assert evaluation.pearson_r(3.0 * x - 1.0, x) == 1.0
    assert evaluation.pearson_r(-x, x) == -1.0


def test_pearson_r_is_undefined_for_constant_or_too_short_data():
    assert math.isnan(evaluation.pearson_r([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))
    assert math.isnan(evaluation.pearson_r([0.5], [0.1]))
    assert math.isnan(evaluation.pearson_r([0.5, np.nan], [0.1, 0.2]))


def test_spearman_rho_of_monotone_data_is_one_where_pearson_is_not():
    x = np.linspace(0.0, 3.0, 25)
    y = np.exp(3 * x)
    assert evaluation.spearman_rho(y, x) == pytest.approx(1.0, abs=1e-12)
    assert evaluation.pearson_r(y, x) < 0.9


def test_spearman_rho_gives_ties_their_average_rank():
    # Ranks with ties averaged: pred (1.5, 1.5, 3), true (1, 2, 3); Pearson of those.
    expected = evaluation.pearson_r([1.5, 1.5, 3.0], [1.0, 2.0, 3.0])
    assert evaluation.spearman_rho([0.2, 0.2, 0.9], [0.1, 0.4, 0.5]) == pytest.approx(expected)


# -------------------------------------------------------------------------------------- AURC


def test_aurc_is_the_mean_selective_risk_over_coverages():
    # Accepting by confidence: risks 0, 0.1, 0.5 -> selective risks 0, 0.05, 0.2.
    assert evaluation.aurc([0.9, 0.8, 0.7], [0.0, 0.1, 0.5]) == pytest.approx((0.0 + 0.05 + 0.2) / 3)


def test_perfect_ranking_has_the_oracle_aurc_and_reversed_ranking_is_worse():
    rng = np.random.default_rng(3)
    true_dice = rng.uniform(0.3, 1.0, 40)
    risk = 1.0 - true_dice
    assert evaluation.e_aurc(true_dice, risk) == pytest.approx(0.0, abs=1e-15)
    # A monotone transform of a perfect predictor ranks the same.
    assert evaluation.e_aurc(true_dice**3, risk) == pytest.approx(0.0, abs=1e-15)
    assert evaluation.aurc(-true_dice, risk) > evaluation.aurc(true_dice, risk)
    assert evaluation.e_aurc(-true_dice, risk) > 0.05
    noisy = true_dice + rng.normal(0, 0.1, 40)
    assert 0.0 < evaluation.e_aurc(noisy, risk) < evaluation.e_aurc(-true_dice, risk)


def test_aurc_of_tied_confidences_is_the_expectation_over_their_orders():
    risk = np.array([0.1, 0.7, 0.3, 0.0])
    # No information at all: every coverage has the mean risk in expectation.
    assert evaluation.aurc(np.full(4, 0.5), risk) == pytest.approx(risk.mean())
    # Tied pair (the last two) gets the mean of its two orders.
    confidence = np.array([0.9, 0.8, 0.2, 0.2])
    first = evaluation.aurc([0.9, 0.8, 0.2, 0.1], risk)
    second = evaluation.aurc([0.9, 0.8, 0.1, 0.2], risk)
    assert evaluation.aurc(confidence, risk) == pytest.approx((first + second) / 2)


# ----------------------------------------------------------------------------------- error maps


def test_error_map_dice_binarises_probabilities_at_the_threshold():
    true = np.array([[1, 1, 0, 0]], dtype=bool)
    prob = np.array([[0.9, 0.4, 0.6, 0.1]])
    assert evaluation.error_map_dice(prob, true) == pytest.approx(metrics.dice([[1, 0, 1, 0]], true))
    assert evaluation.error_map_dice(prob, true, threshold=0.3) == pytest.approx(2 * 2 / (3 + 2))
    assert evaluation.error_map_dice(prob > 0.95, true) == 0.0


def _brute_force_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP by its definition: at every distinct score, call everything scoring >= it positive."""
    ap = 0.0
    previous_recall = 0.0
    for threshold in sorted(set(scores.tolist()), reverse=True):
        called = scores >= threshold
        tp = np.sum(called & labels)
        recall = tp / labels.sum()
        ap += (recall - previous_recall) * tp / called.sum()
        previous_recall = recall
    return ap


def test_average_precision_matches_a_hand_computed_example():
    # Thresholds 0.9 (P=1, R=1/2), 0.8 (P=1/2), 0.7 (P=2/3, R=1), 0.1 (no new recall).
    assert evaluation.average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_average_precision_matches_the_brute_force_definition_with_ties():
    rng = np.random.default_rng(7)
    labels = rng.random(500) < 0.2
    # Rounded scores make many ties; informative but noisy.
    scores = np.round(np.clip(labels * 0.3 + rng.random(500) * 0.7, 0, 1), 2)
    expected = _brute_force_average_precision(scores, labels)
    assert evaluation.average_precision(scores, labels) == pytest.approx(expected, rel=1e-12)
    assert 0.2 < expected < 1.0


def test_average_precision_of_a_perfect_map_is_one_and_without_positives_undefined():
    labels = np.array([0, 1, 1, 0, 1], dtype=bool)
    assert evaluation.average_precision(labels * 0.8 + 0.1, labels) == 1.0
    assert math.isnan(evaluation.average_precision([0.2, 0.3], [0, 0]))


# ---------------------------------------------------------------------------------------- boxes


def _boxes(*rows):
    return np.array(rows, dtype=float).reshape(-1, 5)


def test_box_matching_at_several_iou_thresholds():
    true = _boxes([0, 0, 0, 10, 10], [3, 5, 5, 9, 9])
    pred = _boxes(
        [0, 0, 0, 10, 5],  # IoU 0.5 with the first true box
        [3, 5, 7, 9, 11],  # IoU 8/24 = 1/3 with the second
        [4, 5, 5, 9, 9],  # same place as the second, on another slice: never a match
    )
    assert evaluation.box_precision_recall(pred, true, 0.3) == pytest.approx((2 / 3, 1.0))
    assert evaluation.box_precision_recall(pred, true, 0.4) == pytest.approx((1 / 3, 0.5))
    assert evaluation.box_precision_recall(pred, true, 0.5) == pytest.approx((1 / 3, 0.5))
    assert evaluation.box_precision_recall(pred, true, 0.51) == (0.0, 0.0)


def test_box_matching_is_one_to_one():
    true = _boxes([2, 0, 0, 10, 10])
    pred = _boxes([2, 0, 0, 10, 10], [2, 1, 1, 10, 10])
    assert evaluation.box_precision_recall(pred, true, 0.5) == pytest.approx((0.5, 1.0))


def test_box_matching_finds_the_maximum_matching_not_a_greedy_one():
    # Pred A overlaps both true boxes best with the first; pred B only the first. The maximum matching
    # gives A the second box so that both are matched.
    true = _boxes([0, 0, 0, 10, 10], [0, 0, 6, 10, 16])
    pred = _boxes([0, 0, 2, 10, 12], [0, 0, 0, 10, 9])
    assert evaluation.box_precision_recall(pred, true, 0.4) == (1.0, 1.0)


def test_box_precision_and_recall_are_undefined_without_boxes():
    true = _boxes([0, 0, 0, 4, 4])
    precision, recall = evaluation.box_precision_recall(np.zeros((0, 5)), true, 0.1)
    assert math.isnan(precision) and recall == 0.0
    precision, recall = evaluation.box_precision_recall(true, np.zeros((0, 5)), 0.1)
    assert precision == 0.0 and math.isnan(recall)


def test_malformed_boxes_are_rejected():
    with pytest.raises(InputError, match=r"\(N, 5\)"):
        evaluation.box_precision_recall(np.zeros((2, 4)), _boxes([0, 0, 0, 1, 1]), 0.1)
    with pytest.raises(InputError, match="y1 >= y0"):
        evaluation.box_precision_recall(_boxes([0, 5, 0, 1, 1]), _boxes([0, 0, 0, 1, 1]), 0.1)
    with pytest.raises(InputError, match="threshold"):
        evaluation.box_precision_recall(_boxes([0, 0, 0, 1, 1]), _boxes([0, 0, 0, 1, 1]), 0.0)


def _random_boxes(rng: np.random.Generator, n: int, n_slices: int) -> np.ndarray:
    corner = rng.integers(0, 60, size=(n, 2))
    size = rng.integers(1, 15, size=(n, 2))
    return np.column_stack([rng.integers(0, n_slices, n), corner, corner + size]).astype(float)


def _reference_matched_count(pred: np.ndarray, true: np.ndarray, threshold: float) -> int:
    """Dense N×M IoU with an explicit loop, then a maximum-cardinality assignment."""
    hits = np.zeros((len(pred), len(true)))
    for i, p in enumerate(pred):
        for j, t in enumerate(true):
            if p[0] != t[0]:
                continue
            h = max(0.0, min(p[3], t[3]) - max(p[1], t[1]))
            w = max(0.0, min(p[4], t[4]) - max(p[2], t[2]))
            union = (p[3] - p[1]) * (p[4] - p[2]) + (t[3] - t[1]) * (t[4] - t[2]) - h * w
            hits[i, j] = h * w / union >= threshold
    rows, cols = linear_sum_assignment(hits, maximize=True)
    return int(hits[rows, cols].sum())


def test_box_matching_equals_a_dense_reference_on_many_random_boxes():
    rng = np.random.default_rng(11)
    true = _random_boxes(rng, 150, 6)
    jittered = true[:100] + rng.integers(-2, 3, size=(100, 5)) * [0, 1, 1, 1, 1]
    pred = np.concatenate([jittered, _random_boxes(rng, 80, 6)])
    pred[:, 3:] = np.maximum(pred[:, 3:], pred[:, 1:3])
    for threshold in evaluation.DEFAULT_BOX_IOU_THRESHOLDS:
        matched = _reference_matched_count(pred, true, threshold)
        precision, recall = evaluation.box_precision_recall(pred, true, threshold)
        assert precision == pytest.approx(matched / len(pred)), threshold
        assert recall == pytest.approx(matched / len(true)), threshold


def test_box_matching_handles_thousands_of_boxes_and_permutations():
    rng = np.random.default_rng(5)
    true = _random_boxes(rng, 5000, 200)
    shuffled = true[rng.permutation(len(true))]
    assert evaluation.box_precision_recall(shuffled, true, 0.3) == (1.0, 1.0)
    moved = shuffled.copy()
    moved[:, 0] = (moved[:, 0] + 1) % 200
    precision, recall = evaluation.box_precision_recall(moved, true, 0.3)
    assert precision < 0.5 and recall < 0.5


def test_box_pr_curve_precision_and_recall_fall_as_the_threshold_rises():
    rng = np.random.default_rng(2)
    true = _random_boxes(rng, 200, 10)
    pred = true + rng.integers(-4, 5, size=true.shape) * [0, 1, 1, 1, 1]
    pred[:, 3:] = np.maximum(pred[:, 3:], pred[:, 1:3] + 1)
    curve = evaluation.box_pr_curve_over_thresholds(pred, true)
    np.testing.assert_array_equal(curve.thresholds, evaluation.DEFAULT_BOX_IOU_THRESHOLDS)
    assert np.all(np.diff(curve.precision) <= 0) and np.all(np.diff(curve.recall) <= 0)
    assert curve.recall[-1] < curve.recall[0]
    assert curve.precision[2] == evaluation.box_precision_recall(pred, true, curve.thresholds[2])[0]


# ------------------------------------------------------------------------------ correction curves


def test_correction_curve_accumulates_error_in_order_of_descending_score():
    x, y = evaluation.correction_curve([0.1, 0.9, 0.5, 0.3], [2.0, 3.0, 0.0, 5.0])
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(y, [0, 3 / 10, 3 / 10, 8 / 10, 1.0])


def test_correction_curve_area_is_one_for_the_oracle_and_minus_one_reversed():
    rng = np.random.default_rng(0)
    error = rng.gamma(0.5, 10.0, 60)
    assert evaluation.correction_curve_area(error, error) == pytest.approx(1.0)
    assert evaluation.correction_curve_area(error * 5 + 1, error) == pytest.approx(1.0)
    assert evaluation.correction_curve_area(-error, error) == pytest.approx(-1.0)


def test_correction_curve_area_of_random_orders_is_zero_on_average():
    rng = np.random.default_rng(1)
    error = rng.gamma(0.5, 10.0, 60)
    areas = [evaluation.correction_curve_area(rng.random(60), error) for _ in range(400)]
    assert abs(np.mean(areas)) < 0.03
    assert np.std(areas) > 0.05  # single random orders do vary


def test_tied_scores_are_scored_as_the_average_over_their_orders():
    error = np.array([4.0, 0.0, 1.0, 5.0])
    # One score for all slices: no information, exactly random.
    assert evaluation.correction_curve_area(np.zeros(4), error) == pytest.approx(0.0, abs=1e-12)
    # Two tied pairs: each pair's slices fix the pair's mean error (2, then 3) in expectation.
    x, y = evaluation.correction_curve([1.0, 1.0, 0.0, 0.0], error)
    np.testing.assert_allclose(y, np.array([0, 2, 4, 7, 10]) / 10)


def test_correction_curve_area_is_undefined_without_error_or_with_uniform_error():
    assert math.isnan(evaluation.correction_curve_area([0.3, 0.2, 0.1], [0.0, 0.0, 0.0]))
    assert math.isnan(evaluation.correction_curve_area([0.3, 0.2, 0.1], [2.0, 2.0, 2.0]))
    assert math.isnan(evaluation.fraction_fixed_at([0.3, 0.2, 0.1], [0.0, 0.0, 0.0], 0.5))


def test_fraction_fixed_at_reads_the_curve_between_whole_slices():
    error = np.array([5.0, 3.0, 0.0, 1.0])
    assert evaluation.fraction_fixed_at(error, error, 0.25) == pytest.approx(5 / 9)
    assert evaluation.fraction_fixed_at(error, error, 0.5) == pytest.approx(8 / 9)
    assert evaluation.fraction_fixed_at(error, error, 0.375) == pytest.approx((5 / 9 + 8 / 9) / 2)
    assert evaluation.fraction_fixed_at(error, error, 0.0) == 0.0


def test_correction_curve_rejects_negative_or_mismatched_errors():
    with pytest.raises(InputError):
        evaluation.correction_curve([0.1, 0.2], [1.0, -1.0])
    with pytest.raises(InputError):
        evaluation.correction_curve([0.1, 0.2], [1.0])


# ------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(4)
    values = rng.normal(0.8, 0.1, 60)
    estimate, low, high = evaluation.bootstrap_ci(values, np.mean, n_resamples=500, seed=9)
    assert estimate == pytest.approx(values.mean())
    assert low < estimate < high
    # The standard error of a mean of 60 values with sd 0.1 is ~0.013: a 95% interval ~0.05 wide.
    assert 0.03 < high - low < 0.08
    assert evaluation.bootstrap_ci(values, np.mean, n_resamples=500, seed=9) == (estimate, low, high)


def test_bootstrap_ci_resamples_pairs_together():
    rng = np.random.default_rng(6)
    true = rng.uniform(0.3, 1.0, 50)
    pred = true + rng.normal(0, 0.05, 50)
    estimate, low, high = evaluation.bootstrap_ci((pred, true), evaluation.pearson_r, n_resamples=300)
    assert estimate == evaluation.pearson_r(pred, true)
    assert low < estimate < high <= 1.0
    # Resampling the columns independently would destroy the correlation; pairs keep it high.
    assert low > 0.8
    estimate, low, high = evaluation.bootstrap_ci((pred, true), evaluation.mae, n_resamples=300)
    assert low < estimate < high


def test_bootstrap_ci_rejects_unequal_columns():
    with pytest.raises(InputError, match="same length"):
        evaluation.bootstrap_ci((np.zeros(3), np.zeros(4)), evaluation.mae)


# --- localisation as a reviewer meets it ---------------------------------------------------------------

def _error_volume() -> np.ndarray:
    error = np.zeros((4, 20, 20), dtype=bool)
    error[1, 2:7, 2:7] = True  # a 5x5 mm region: substantive
    error[2, 10, 2:18] = True  # a one-pixel band: observer variability, never a region to find
    return error


def test_a_box_on_a_substantive_error_finds_it_and_is_right():
    counts = evaluation.localisation_counts([[1, 2, 2, 7, 7]], _error_volume(), 0, (1.0, 1.0, 1.0))
    assert (counts.found, counts.regions, counts.right, counts.boxes) == (1, 1, 1, 1)


def test_thin_boundary_bands_are_not_regions_but_a_box_on_one_is_not_a_false_alarm():
    counts = evaluation.localisation_counts([[2, 10, 2, 11, 18]], _error_volume(), 0, (1.0, 1.0, 1.0))
    assert counts.regions == 1 and counts.found == 0
    assert counts.right == 1


def test_a_box_where_nothing_is_wrong_is_a_false_alarm_and_finds_nothing():
    counts = evaluation.localisation_counts([[1, 12, 12, 18, 18]], _error_volume(), 0, (1.0, 1.0, 1.0))
    assert (counts.found, counts.right, counts.boxes) == (0, 0, 1)


def test_boxes_that_together_cover_half_of_a_region_find_it():
    error = np.zeros((1, 40, 40), dtype=bool)
    error[0, 5:35, 5:35] = True
    one_wide_box = [[0, 5, 5, 35, 12]]  # IoU 0.23 with the region's box
    # Slivers two pixels wide: each has IoU 0.067 with the region; eight of them cover more than half of it.
    slivers = [[0, 5, 5, 35, 7], [0, 5, 8, 35, 10], [0, 5, 11, 35, 13], [0, 5, 14, 35, 16], [0, 5, 17, 35, 19],
               [0, 5, 20, 35, 22], [0, 5, 23, 35, 25], [0, 5, 26, 35, 28]]
    assert evaluation.localisation_counts(one_wide_box, error, 0, (1.0, 1.0, 1.0)).found == 1
    few = evaluation.localisation_counts(slivers[:2], error, 0, (1.0, 1.0, 1.0))
    many = evaluation.localisation_counts(slivers, error, 0, (1.0, 1.0, 1.0))
    assert few.found == 0 and many.found == 1


def test_region_area_is_measured_in_mm2():
    error = np.zeros((1, 20, 20), dtype=bool)
    error[0, 2:5, 2:5] = True  # 9 pixels: a region at 1.1 mm, not at 1 mm
    assert evaluation.localisation_counts([], error, 0, (1.0, 1.0, 1.0)).regions == 0
    assert evaluation.localisation_counts([], error, 0, (1.0, 1.1, 1.1)).regions == 1


def test_counts_add_up_over_classes_and_queries():
    total = evaluation.LocalisationCounts(1, 2, 3, 4) + evaluation.LocalisationCounts(1, 0, 0, 0)
    assert (total.recall, total.precision) == (1.0, 0.75)
