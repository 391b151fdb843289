"""The key property of the estimates (issue 2): with Ê equal to the true error map, SegQC's estimated
metrics equal the true metrics to floating-point precision, per class, per slice and for the case.

Queries are made from the real ground truth by erosion, dilation, shifts, label swaps and removing a
part, so that the metrics are far from trivial.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import ndimage

from SegQCLib.quality import estimates, metrics

LABELS = (1, 2)
RTOL = 1e-9
ATOL = 1e-12
_FACE = ndimage.generate_binary_structure(3, 1)


def _erode_class_1(truth: np.ndarray) -> np.ndarray:
    query = truth.copy()
    query[(truth == 1) & ~ndimage.binary_erosion(truth == 1, _FACE)] = 0
    return query


def _dilate_class_2(truth: np.ndarray) -> np.ndarray:
    query = truth.copy()
    query[ndimage.binary_dilation(truth == 2, _FACE, iterations=2)] = 2  # also over class 1
    return query


def _shift(truth: np.ndarray) -> np.ndarray:
    return np.roll(truth, (1, -2, 1), axis=(0, 1, 2))


def _swap_labels_in_half(truth: np.ndarray) -> np.ndarray:
    query = truth.copy()
    half = truth.shape[2] // 2
    part = query[:, :, :half]
    ones = part == 1
    part[part == 2] = 1
    part[ones] = 2
    return query


def _remove_largest_slab(truth: np.ndarray) -> np.ndarray:
    query = truth.copy()
    occupied = np.flatnonzero(np.any(truth > 0, axis=(1, 2)))
    middle = occupied[len(occupied) // 2]
    query[middle - 2 : middle + 2] = 0
    return query


def _everything_wrong(truth: np.ndarray) -> np.ndarray:
    """No class overlaps its truth at all (class 1 where the truth has 2 and vice versa, plus extra)."""
    query = np.zeros_like(truth)
    query[truth == 1] = 2
    query[truth == 2] = 1
    query[0] = 1  # a slice of pure false positive
    return query


PERTURBATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "erode": _erode_class_1,
    "dilate": _dilate_class_2,
    "shift": _shift,
    "swap": _swap_labels_in_half,
    "remove": _remove_largest_slab,
    "all_wrong": _everything_wrong,
}


def _true_error_prob(query: np.ndarray, truth: np.ndarray) -> dict[int, np.ndarray]:
    # float32, as a network delivers it: 0 and 1 are exact in float32, so exactness must survive.
    return {c: e.astype(np.float32) for c, e in metrics.error_maps(query, truth, LABELS).items()}


def _assert_exact(estimate, truth_value, what: str) -> None:
    np.testing.assert_allclose(estimate, truth_value, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=what)


@pytest.mark.parametrize("perturbation", sorted(PERTURBATIONS))
def test_estimated_truth_from_the_true_error_is_the_truth(hippocampus_sample, perturbation):
    for case_id, _, labelmap in hippocampus_sample:
        truth = labelmap.array
        query = PERTURBATIONS[perturbation](truth)
        for label, error_prob in _true_error_prob(query, truth).items():
            estimated = estimates.estimated_truth(query == label, error_prob)
            np.testing.assert_array_equal(estimated, (truth == label).astype(estimated.dtype), err_msg=case_id)


@pytest.mark.parametrize("perturbation", sorted(PERTURBATIONS))
def test_class_estimates_from_the_true_error_equal_the_true_metrics(hippocampus_sample, perturbation):
    for case_id, _, labelmap in hippocampus_sample:
        truth = labelmap.array
        query = PERTURBATIONS[perturbation](truth)
        for label, error_prob in _true_error_prob(query, truth).items():
            m = query == label
            t = truth == label
            estimate = estimates.estimate_class(m, error_prob)
            where = f"{case_id} {perturbation} class {label}"
            _assert_exact(estimate.dice, metrics.dice(m, t), f"dice {where}")
            _assert_exact(estimate.iou, metrics.iou(m, t), f"iou {where}")
            _assert_exact(estimate.rvd, metrics.rvd(m, t), f"rvd {where}")
            _assert_exact(estimate.arvd, metrics.arvd(m, t), f"arvd {where}")


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("perturbation", sorted(PERTURBATIONS))
def test_per_slice_estimates_from_the_true_error_equal_the_true_per_slice_metrics(
    hippocampus_sample, perturbation, axis
):
    for case_id, _, labelmap in hippocampus_sample:
        truth = labelmap.array
        query = PERTURBATIONS[perturbation](truth)
        for label, error_prob in _true_error_prob(query, truth).items():
            m = query == label
            t = truth == label
            estimate = estimates.estimate_class_per_slice(m, error_prob, axis)
            where = f"{case_id} {perturbation} class {label} axis {axis}"
            _assert_exact(estimate.dice, metrics.per_slice_dice(m, t, axis), f"dice {where}")
            _assert_exact(estimate.iou, metrics.per_slice_iou(m, t, axis), f"iou {where}")
            _assert_exact(estimate.rvd, metrics.per_slice_rvd(m, t, axis), f"rvd {where}")
            _assert_exact(estimate.arvd, metrics.per_slice_arvd(m, t, axis), f"arvd {where}")


@pytest.mark.parametrize("perturbation", sorted(PERTURBATIONS))
def test_case_dice_estimate_from_the_true_error_equals_the_multiclass_dice(hippocampus_sample, perturbation):
    for case_id, _, labelmap in hippocampus_sample:
        truth = labelmap.array
        query = PERTURBATIONS[perturbation](truth)
        estimate = estimates.estimate_case_dice(query, _true_error_prob(query, truth))
        _assert_exact(estimate, metrics.multiclass_dice(query, truth, LABELS), f"{case_id} {perturbation}")


def test_the_perturbed_queries_are_far_from_perfect(hippocampus_sample):
    """Guards the tests above against passing trivially on near-perfect queries."""
    for case_id, _, labelmap in hippocampus_sample:
        truth = labelmap.array
        for name, perturb in PERTURBATIONS.items():
            value = metrics.multiclass_dice(perturb(truth), truth, LABELS)
            assert value < 0.97, (case_id, name, value)
        assert metrics.multiclass_dice(_everything_wrong(truth), truth, LABELS) == 0.0


def test_estimates_are_exact_when_the_query_is_the_truth(hippocampus_case):
    _, labelmap = hippocampus_case
    truth = labelmap.array
    error_prob = _true_error_prob(truth, truth)
    assert estimates.estimate_case_dice(truth, error_prob) == 1.0
    for label in LABELS:
        estimate = estimates.estimate_class(truth == label, error_prob[label])
        assert (estimate.dice, estimate.iou, estimate.rvd, estimate.arvd) == (1.0, 1.0, 0.0, 0.0)
