"""Estimates from Ê (SegQC eqs. 4-8): behaviour beyond the exactness property (see test_exactness.py)."""

import numpy as np
import pytest

from SegQCLib.quality.estimates import (
    estimate_case_dice,
    estimate_class,
    estimate_class_per_slice,
    estimated_truth,
    quality_index,
)


def ball_mask(shape=(9, 11, 13), radius=3.5) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    centre = np.array(shape) / 2
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2


def test_estimated_truth_is_mask_times_one_minus_error_plus_rest_times_error():
    mask = np.array([True, True, False, False])
    error = np.array([0.0, 0.3, 0.6, 0.0])
    np.testing.assert_allclose(estimated_truth(mask, error), [1.0, 0.7, 0.6, 0.0])


def test_zero_predicted_error_estimates_a_perfect_segmentation():
    mask = ball_mask()
    estimate = estimate_class(mask, np.zeros(mask.shape, np.float32))
    assert (estimate.dice, estimate.iou, estimate.rvd, estimate.arvd) == (1.0, 1.0, 0.0, 0.0)


def test_uniform_half_error_inside_the_mask_halves_the_estimated_intersection():
    mask = ball_mask()
    error = np.where(mask, 0.5, 0.0).astype(np.float32)
    estimate = estimate_class(mask, error)
    m = mask.sum()
    # |M∩T|^ = m/2, ΣT̂ = m/2  ->  Dice = 2(m/2)/(m + m/2) = 2/3
    assert estimate.dice == pytest.approx(2 / 3)
    assert estimate.truth_voxels_est == pytest.approx(m / 2)
    assert estimate.rvd == pytest.approx(1.0)


def test_arvd_is_the_error_sum_over_the_estimated_truth_volume():
    rng = np.random.default_rng(0)
    mask = ball_mask()
    error = rng.uniform(0, 0.4, mask.shape)
    estimate = estimate_class(mask, error)
    truth_hat = estimated_truth(mask, error)
    assert estimate.arvd == pytest.approx(np.abs(mask - truth_hat).sum() / truth_hat.sum(), rel=1e-9)


def test_dice_from_sums_equals_the_papers_formula_on_random_maps():
    rng = np.random.default_rng(1)
    mask = ball_mask()
    error = rng.uniform(0, 1, mask.shape)
    truth_hat = estimated_truth(mask, error)
    expected = 2 * np.sum(mask * (1 - error)) / (mask.sum() + truth_hat.sum())
    assert estimate_class(mask, error).dice == pytest.approx(expected, rel=1e-12)


def test_empty_mask_and_no_predicted_error_is_perfect_in_3d():
    estimate = estimate_class(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 3)))
    assert estimate.dice == 1.0
    assert estimate.arvd == 0.0


def test_empty_mask_with_predicted_missed_structure_estimates_zero_dice():
    error = np.zeros((3, 3, 3))
    error[1, 1, 1] = 1.0
    assert estimate_class(np.zeros((3, 3, 3), bool), error).dice == 0.0


def test_per_slice_estimates_are_nan_on_slices_without_structure_or_error():
    mask = np.zeros((4, 5, 5), bool)
    mask[1:3, 1:4, 1:4] = True
    per_slice = estimate_class_per_slice(mask, np.zeros(mask.shape), axis=0)
    assert np.isnan(per_slice.dice[[0, 3]]).all()
    np.testing.assert_allclose(per_slice.dice[[1, 2]], 1.0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_per_slice_estimates_equal_3d_estimates_of_each_slice(axis):
    rng = np.random.default_rng(axis)
    mask = ball_mask()
    error = rng.uniform(0, 0.5, mask.shape)
    per_slice = estimate_class_per_slice(mask, error, axis=axis)
    for index in range(mask.shape[axis]):
        single = estimate_class(np.take(mask, [index], axis=axis), np.take(error, [index], axis=axis))
        if np.take(mask, index, axis=axis).any():
            assert per_slice.dice[index] == pytest.approx(single.dice, rel=1e-12)
            assert per_slice.arvd[index] == pytest.approx(single.arvd, rel=1e-12)


def test_case_dice_pools_classes_rather_than_averaging_them():
    seg = np.zeros((1, 1, 12), np.uint8)
    seg[0, 0, :10] = 1  # large class, perfect
    seg[0, 0, 10:] = 2  # small class, half wrong
    probs = {1: np.zeros(seg.shape), 2: np.zeros(seg.shape)}
    probs[2][0, 0, 11] = 1.0
    # pooled: 2*(10 + 1) / ((10 + 10) + (2 + 1)) = 22/23
    assert estimate_case_dice(seg, probs) == pytest.approx(22 / 23)


def test_quality_index_counts_a_voxel_wrong_in_two_classes_once():
    first = np.zeros((2, 2, 2))
    second = np.zeros((2, 2, 2))
    first[0, 0, 0] = second[0, 0, 0] = 1.0
    assert quality_index({1: first, 2: second}) == pytest.approx(1 - 1 / 8)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        estimate_class(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3)))
