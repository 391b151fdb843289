"""Ranking for review: slices by summed predicted error, boxes by score, cases by estimated Dice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from SegQCLib.errors import InputError
from SegQCLib.quality.ranking import rank_boxes, rank_cases, rank_slices, slice_error_scores
from SegQCLib.quality.report import ErrorBox


def _box(score: float, label: int = 1, slice_index: int = 0) -> ErrorBox:
    return ErrorBox(label=label, slice=slice_index, bbox_zyx=[[slice_index, 0, 0], [slice_index + 1, 1, 1]],
                    center_ras=[0.0, 0.0, 0.0], center_lps=[0.0, 0.0, 0.0], size_mm=[1.0, 1.0, 1.0],
                    area_mm2=1.0, score=score)


# --- slice scores ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_slice_scores_sum_every_class_over_each_slice(slice_axis):
    rng = np.random.default_rng(slice_axis)
    maps = {1: rng.random((4, 5, 6), dtype=np.float32), 2: rng.random((4, 5, 6), dtype=np.float32)}
    scores = slice_error_scores(maps, slice_axis)
    expected = [sum(float(np.take(m, i, axis=slice_axis).sum(dtype=np.float64)) for m in maps.values())
                for i in range(maps[1].shape[slice_axis])]
    np.testing.assert_allclose(scores, expected, rtol=1e-12)


def test_on_a_real_case_the_top_slice_holds_the_most_true_error(hippocampus_case):
    _, truth = hippocampus_case
    query = np.roll(truth.array, 1, axis=1)
    error = {c: ((query == c) != (truth.array == c)).astype(np.float32) for c in (1, 2)}
    axis = truth.geometry.default_slice_axis()
    order = rank_slices(slice_error_scores(error, axis))
    error_voxels = sum(e.sum(axis=tuple(a for a in range(3) if a != axis)) for e in error.values())
    assert error_voxels[order[0]] == error_voxels.max()
    assert np.all(np.diff(error_voxels[order]) <= 0)


def test_slice_scores_reject_missing_or_mismatched_maps():
    with pytest.raises(InputError):
        slice_error_scores({}, 0)
    with pytest.raises(InputError):
        slice_error_scores({1: np.zeros((3, 4, 4)), 2: np.zeros((4, 4, 4))}, 0)
    with pytest.raises(InputError):
        slice_error_scores({1: np.zeros((3, 4))}, 0)
    with pytest.raises(InputError):
        slice_error_scores({1: np.zeros((3, 4, 4))}, 3)


# --- slice order --------------------------------------------------------------------------------------
def test_slices_are_ranked_by_descending_score():
    assert rank_slices(np.array([0.1, 3.0, 2.0, 0.0])).tolist() == [1, 2, 0, 3]


def test_tied_slices_keep_slice_order():
    assert rank_slices(np.array([1.0, 2.0, 1.0, 2.0, 1.0])).tolist() == [1, 3, 0, 2, 4]


def test_nan_slice_scores_go_last():
    assert rank_slices(np.array([np.nan, 1.0, 5.0])).tolist() == [2, 1, 0]


# --- boxes --------------------------------------------------------------------------------------------
def test_boxes_are_ranked_by_descending_score_ties_in_given_order():
    boxes = [_box(1.0, slice_index=0), _box(4.0, slice_index=1), _box(1.0, slice_index=2), _box(2.5, slice_index=3)]
    assert [b.slice for b in rank_boxes(boxes)] == [1, 3, 0, 2]


# --- cases --------------------------------------------------------------------------------------------
def test_cases_are_ranked_worst_estimated_dice_first():
    assert rank_cases(["a", "b", "c"], [0.9, 0.5, 0.7]) == ["b", "c", "a"]


def test_cases_without_an_estimate_come_first_in_given_order():
    ranked = rank_cases(["a", "b", "c", "d", "e"], [0.9, None, 0.2, math.nan, np.float32("nan")])
    assert ranked == ["b", "d", "e", "c", "a"]


def test_tied_cases_keep_given_order():
    assert rank_cases(["x", "y", "z"], [0.8, 0.8, 0.1]) == ["z", "x", "y"]


def test_case_ranking_rejects_mismatched_or_duplicate_ids():
    with pytest.raises(InputError):
        rank_cases(["a", "b"], [0.5])
    with pytest.raises(InputError):
        rank_cases(["a", "a"], [0.5, 0.6])
