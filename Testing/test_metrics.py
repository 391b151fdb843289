"""Ground-truth metrics: hand-counted examples, documented empty-mask conventions, and real cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from SegQCLib.errors import InputError
from SegQCLib.quality import metrics

LABELS = (1, 2)
ISOTROPIC_MM = (1.0, 1.0, 1.0)


def _line(length: int, start: int, stop: int) -> np.ndarray:
    """A (1, 1, length) mask set on [start, stop): every voxel is a boundary voxel."""
    mask = np.zeros((1, 1, length), dtype=bool)
    mask[0, 0, start:stop] = True
    return mask


def _eroded(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))


def _dilated(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_dilation(mask, structure=ndimage.generate_binary_structure(3, 1))


def _perturbed_query(truth: np.ndarray) -> np.ndarray:
    """A realistic wrong segmentation: class 1 eroded, class 2 shifted by one voxel along y, a slab removed."""
    query = np.zeros_like(truth)
    query[_eroded(truth == 1)] = 1
    shifted = np.roll(truth == 2, 1, axis=1) & (query == 0)
    query[shifted] = 2
    occupied = np.flatnonzero(np.any(truth > 0, axis=(1, 2)))
    query[occupied[len(occupied) // 2] : occupied[len(occupied) // 2] + 2] = 0
    return query


@pytest.fixture(scope="module")
def real_pair(hippocampus_case):
    _, labelmap = hippocampus_case
    truth = labelmap.array
    return _perturbed_query(truth), truth, labelmap.geometry.spacing_zyx_mm


# ------------------------------------------------------------------------------------------- overlap


def test_dice_and_iou_match_hand_counts():
    query = _line(10, 0, 4)  # 4 voxels
    truth = _line(10, 1, 7)  # 6 voxels, 3 shared
    assert metrics.dice(query, truth) == pytest.approx(2 * 3 / (4 + 6))
    assert metrics.iou(query, truth) == pytest.approx(3 / 7)


def test_rvd_and_arvd_follow_the_paper_formulas():
    query = _line(10, 0, 4)
    truth = _line(10, 1, 7)
    assert metrics.rvd(query, truth) == pytest.approx((4 - 6) / 6)
    # ARVD = Σ|m - t| / Σt: 1 voxel too many plus 3 missing, over 6 true voxels.
    assert metrics.arvd(query, truth) == pytest.approx(4 / 6)


def test_arvd_does_not_let_over_and_under_segmentation_cancel():
    query = _line(10, 0, 5)
    truth = _line(10, 2, 7)
    assert metrics.rvd(query, truth) == 0.0
    assert metrics.arvd(query, truth) == pytest.approx(4 / 5)


def test_both_empty_masks_agree_perfectly():
    empty = np.zeros((3, 4, 5), dtype=bool)
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.iou(empty, empty) == 1.0
    assert metrics.rvd(empty, empty) == 0.0
    assert metrics.arvd(empty, empty) == 0.0
    assert metrics.normalized_surface_dice(empty, empty, ISOTROPIC_MM, 1.0) == 1.0


def test_empty_truth_makes_relative_volume_metrics_undefined():
    empty = np.zeros((3, 4, 5), dtype=bool)
    query = empty.copy()
    query[1, 1, 1] = True
    assert math.isnan(metrics.rvd(query, empty))
    assert math.isnan(metrics.arvd(query, empty))
    assert metrics.dice(query, empty) == 0.0
    assert metrics.iou(query, empty) == 0.0
    assert metrics.normalized_surface_dice(query, empty, ISOTROPIC_MM, 1.0) == 0.0


def test_empty_query_misses_everything():
    truth = np.zeros((3, 4, 5), dtype=bool)
    truth[1, 1:3, 1:3] = True
    empty = np.zeros_like(truth)
    assert metrics.dice(empty, truth) == 0.0
    assert metrics.rvd(empty, truth) == -1.0
    assert metrics.arvd(empty, truth) == 1.0
    assert metrics.normalized_surface_dice(empty, truth, ISOTROPIC_MM, 1.0) == 0.0


def test_masks_of_different_shapes_are_rejected():
    with pytest.raises(InputError, match="same shape"):
        metrics.dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(InputError, match="same shape"):
        metrics.error_maps(np.zeros((2, 2, 2), int), np.zeros((2, 3, 2), int), LABELS)


def test_error_maps_are_the_per_class_xor_of_query_and_truth():
    truth = np.array([1, 1, 2, 2, 0, 0]).reshape(1, 1, 6)
    query = np.array([1, 2, 2, 0, 1, 0]).reshape(1, 1, 6)
    maps = metrics.error_maps(query, truth, LABELS)
    assert set(maps) == set(LABELS)
    assert maps[1].dtype == bool
    # Voxel 1 (true 1, given 2) is an error of both classes; voxel 3 (2 missed) and 4 (1 added) of one.
    np.testing.assert_array_equal(maps[1].ravel(), [0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(maps[2].ravel(), [0, 1, 0, 1, 0, 0])


def test_error_maps_on_a_real_case_mark_exactly_the_disagreeing_voxels(real_pair):
    query, truth, _ = real_pair
    maps = metrics.error_maps(query, truth, LABELS)
    for label, error in maps.items():
        np.testing.assert_array_equal(error, (query == label) != (truth == label))
    # Every voxel where the maps disagree is an error of at least one class, and no other voxel is.
    np.testing.assert_array_equal(maps[1] | maps[2], query != truth)


def test_multiclass_dice_counts_a_swapped_label_against_both_classes():
    truth = np.array([1, 1, 2, 2, 0, 0]).reshape(1, 1, 6)
    query = np.array([1, 2, 2, 0, 1, 0]).reshape(1, 1, 6)
    # TP = voxels 0 and 2; class 1: |M|=2, |T|=2; class 2: |M|=2, |T|=2.
    assert metrics.multiclass_dice(query, truth, LABELS) == pytest.approx(2 * 2 / 8)


def test_multiclass_dice_equals_the_appendix_formula_on_real_cases(hippocampus_sample):
    for case_id, _, labelmap in hippocampus_sample:
        truth = labelmap.array
        query = _perturbed_query(truth)
        tp = int(np.count_nonzero((query == truth) & (truth > 0)))
        fp = sum(int(np.count_nonzero((query == c) & (truth != c))) for c in LABELS)
        fn = sum(int(np.count_nonzero((truth == c) & (query != c))) for c in LABELS)
        expected = 2 * tp / (2 * tp + fp + fn)
        assert metrics.multiclass_dice(query, truth, LABELS) == pytest.approx(expected, rel=1e-12), case_id
        assert 0.3 < expected < 0.99, case_id  # the perturbation is neither trivial nor total


def test_multiclass_dice_of_maps_without_the_classes_is_one():
    empty = np.zeros((2, 3, 4), dtype=np.uint8)
    assert metrics.multiclass_dice(empty, empty, LABELS) == 1.0


def test_eroded_truth_has_the_overlap_implied_by_containment(real_pair):
    _, truth, _ = real_pair
    true_mask = truth == 1
    eroded = _eroded(true_mask)
    n_eroded = int(eroded.sum())
    n_true = int(true_mask.sum())
    assert 0 < n_eroded < n_true
    assert metrics.dice(eroded, true_mask) == pytest.approx(2 * n_eroded / (n_eroded + n_true))
    assert metrics.iou(eroded, true_mask) == pytest.approx(n_eroded / n_true)
    assert metrics.rvd(eroded, true_mask) == pytest.approx((n_eroded - n_true) / n_true)
    # Under-segmentation only: every error voxel is a missed one, so ARVD = -RVD.
    assert metrics.arvd(eroded, true_mask) == pytest.approx(-metrics.rvd(eroded, true_mask))


def test_dilated_truth_has_the_overlap_implied_by_containment(real_pair):
    _, truth, _ = real_pair
    true_mask = truth == 2
    dilated = _dilated(true_mask)
    n_dilated = int(dilated.sum())
    n_true = int(true_mask.sum())
    assert metrics.dice(dilated, true_mask) == pytest.approx(2 * n_true / (n_dilated + n_true))
    assert metrics.iou(dilated, true_mask) == pytest.approx(n_true / n_dilated)
    assert metrics.arvd(dilated, true_mask) == pytest.approx(metrics.rvd(dilated, true_mask))
    assert metrics.rvd(dilated, true_mask) > 0


# ------------------------------------------------------------------------------------------------ NSD


def test_nsd_matches_hand_counted_boundary_distances():
    a = _line(10, 2, 5)  # boundary voxels 2, 3, 4
    b = _line(10, 4, 8)  # boundary voxels 4..7
    # Distances a->b: 2, 1, 0; b->a: 0, 1, 2, 3 (voxels of 1 mm).
    assert metrics.normalized_surface_dice(a, b, ISOTROPIC_MM, 0.0) == pytest.approx(2 / 7)
    assert metrics.normalized_surface_dice(a, b, ISOTROPIC_MM, 1.0) == pytest.approx(4 / 7)
    assert metrics.normalized_surface_dice(a, b, ISOTROPIC_MM, 2.0) == pytest.approx(6 / 7)
    assert metrics.normalized_surface_dice(a, b, ISOTROPIC_MM, 3.0) == 1.0


def test_nsd_distances_are_in_mm():
    a = _line(10, 2, 5)
    b = _line(10, 4, 8)
    # 2 mm voxels along x: the same counts need twice the tolerance.
    assert metrics.normalized_surface_dice(a, b, (1.0, 1.0, 2.0), 2.0) == pytest.approx(4 / 7)
    assert metrics.normalized_surface_dice(a, b, (1.0, 1.0, 2.0), 1.0) == pytest.approx(2 / 7)


def test_nsd_of_the_truth_with_itself_is_one(hippocampus_sample):
    for case_id, _, labelmap in hippocampus_sample:
        spacing = labelmap.geometry.spacing_zyx_mm
        for label in LABELS:
            mask = labelmap.array == label
            assert metrics.normalized_surface_dice(mask, mask, spacing, 0.0) == 1.0, (case_id, label)


def test_nsd_rises_with_tolerance_to_one(real_pair):
    query, truth, spacing = real_pair
    values = [metrics.normalized_surface_dice(query == 1, truth == 1, spacing, t) for t in (0.0, 1.0, 2.0, 50.0)]
    assert values[0] < values[1] <= values[2] < 1.0 or values[0] < values[1] < values[2] <= 1.0
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values[-1] == 1.0


def test_nsd_of_a_one_slice_shift_depends_on_the_slice_spacing(real_pair):
    _, truth, _ = real_pair
    mask = truth == 1
    shifted = np.zeros_like(mask)
    shifted[1:] = mask[:-1]  # every boundary voxel has its image one slice further along z
    assert metrics.normalized_surface_dice(mask, shifted, (1.0, 1.0, 1.0), 1.0) == 1.0
    assert metrics.normalized_surface_dice(mask, shifted, (1.0, 2.0, 2.0), 1.0) == 1.0
    assert metrics.normalized_surface_dice(mask, shifted, (2.0, 1.0, 1.0), 2.0) == 1.0
    assert metrics.normalized_surface_dice(mask, shifted, (2.0, 1.0, 1.0), 1.0) < 1.0


def test_nsd_is_unchanged_when_spacing_and_tolerance_scale_together(real_pair):
    query, truth, _ = real_pair
    one = metrics.normalized_surface_dice(query == 2, truth == 2, (1.0, 1.5, 0.8), 1.2)
    two = metrics.normalized_surface_dice(query == 2, truth == 2, (2.0, 3.0, 1.6), 2.4)
    assert one == pytest.approx(two, abs=1e-12)
    # Doubling the spacing at a fixed tolerance can only push surfaces out of tolerance.
    assert metrics.normalized_surface_dice(query == 2, truth == 2, (2.0, 3.0, 1.6), 1.2) < one


def _reference_nsd(a: np.ndarray, b: np.ndarray, spacing, tolerance_mm: float) -> float:
    """NSD on the full volume, no cropping: the definition written out."""
    structure = ndimage.generate_binary_structure(a.ndim, 1)
    boundary_a = a & ~ndimage.binary_erosion(a, structure, border_value=0)
    boundary_b = b & ~ndimage.binary_erosion(b, structure, border_value=0)
    a_to_b = ndimage.distance_transform_edt(~boundary_b, sampling=spacing)[boundary_a]
    b_to_a = ndimage.distance_transform_edt(~boundary_a, sampling=spacing)[boundary_b]
    return (np.sum(a_to_b <= tolerance_mm) + np.sum(b_to_a <= tolerance_mm)) / (a_to_b.size + b_to_a.size)


@pytest.fixture(params=["probe_offsets", "distance_transform"])
def nsd_method(request, monkeypatch):
    """Forces one of the two exact ways NSD tests the tolerance (normally chosen by cost)."""
    monkeypatch.setattr(metrics, "_PROBE_COST_PER_VOXEL", 10**9 if request.param == "probe_offsets" else 0)
    return request.param


def test_nsd_on_the_cropped_box_equals_the_full_volume_definition(real_pair, nsd_method):
    query, truth, _ = real_pair
    spacing = (1.3, 0.9, 1.1)
    for label in LABELS:
        # Pad with background so the crop really removes something; the mask touching the array border
        # on one side (the roll) checks the border handling too.
        a = np.pad(query == label, ((4, 0), (0, 6), (3, 3)))
        b = np.pad(np.roll(truth == label, 2, axis=2), ((4, 0), (0, 6), (3, 3)))
        for tolerance in (0.0, 0.5, 1.0, 2.0, 4.5):
            expected = _reference_nsd(a, b, spacing, tolerance)
            assert metrics.normalized_surface_dice(a, b, spacing, tolerance) == pytest.approx(expected, abs=1e-12)


def test_nsd_rejects_bad_spacing_and_tolerance():
    mask = _line(5, 1, 3)
    with pytest.raises(InputError, match="Spacing"):
        metrics.normalized_surface_dice(mask, mask, (1.0, 0.0, 1.0), 1.0)
    for tolerance in (-1.0, math.inf, math.nan):
        with pytest.raises(InputError, match="tolerance"):
            metrics.normalized_surface_dice(mask, mask, ISOTROPIC_MM, tolerance)
        with pytest.raises(InputError, match="tolerance"):
            metrics.per_slice_nsd(mask, mask, ISOTROPIC_MM, tolerance, axis=0)


# ----------------------------------------------------------------------------------------- case level


def test_case_metrics_gather_class_metrics_multiclass_dice_and_mean_nsd(real_pair):
    query, truth, spacing = real_pair
    result = metrics.case_metrics(query, truth, (1, 2, 3), spacing, nsd_tolerance_mm=1.0)
    assert [c.label for c in result.classes] == [1, 2, 3]
    for entry in result.classes[:2]:
        m = query == entry.label
        t = truth == entry.label
        assert entry.dice == metrics.dice(m, t)
        assert entry.iou == metrics.iou(m, t)
        assert entry.rvd == metrics.rvd(m, t)
        assert entry.arvd == metrics.arvd(m, t)
        assert entry.nsd == metrics.normalized_surface_dice(m, t, spacing, 1.0)
    # Class 3 occurs nowhere: perfect by convention, and left out of the case NSD.
    absent = result.classes[2]
    assert (absent.dice, absent.iou, absent.rvd, absent.arvd, absent.nsd) == (1.0, 1.0, 0.0, 0.0, 1.0)
    assert result.nsd == pytest.approx((result.classes[0].nsd + result.classes[1].nsd) / 2)
    assert result.dice == metrics.multiclass_dice(query, truth, (1, 2, 3))
    assert result.nsd < 1.0 and result.dice < 1.0


# ------------------------------------------------------------------------------------------ per slice


def _reference_per_slice(metric, query: np.ndarray, truth: np.ndarray, axis: int, nan_if_both_empty: bool):
    """The per-slice metric by a plain loop: the specification the vectorised version must meet."""
    values = []
    for index in range(query.shape[axis]):
        m = np.take(query, index, axis=axis)
        t = np.take(truth, index, axis=axis)
        if nan_if_both_empty and not m.any() and not t.any():
            values.append(np.nan)
        else:
            values.append(metric(m, t))
    return np.array(values)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_per_slice_overlap_metrics_equal_a_slice_by_slice_loop(real_pair, axis):
    query, truth, _ = real_pair
    for label in LABELS:
        m = query == label
        t = truth == label
        cases = [
            (metrics.per_slice_dice, metrics.dice, True),
            (metrics.per_slice_iou, metrics.iou, True),
            (metrics.per_slice_rvd, metrics.rvd, False),
            (metrics.per_slice_arvd, metrics.arvd, False),
        ]
        for vectorised, scalar, nan_if_both_empty in cases:
            expected = _reference_per_slice(scalar, m, t, axis, nan_if_both_empty)
            got = vectorised(m, t, axis)
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0, err_msg=f"{vectorised.__name__} {label}")


def test_per_slice_metrics_follow_the_empty_slice_conventions(real_pair):
    query, truth, _ = real_pair
    # Class 2 of the query is shifted by one voxel along y: along that axis there are slices with the
    # class in neither map, in both, and (at the leading edge of the shift) in the query only.
    m = query == 2
    t = truth == 2
    dice = metrics.per_slice_dice(m, t, axis=1)
    arvd = metrics.per_slice_arvd(m, t, axis=1)
    rvd = metrics.per_slice_rvd(m, t, axis=1)
    neither = ~m.any(axis=(0, 2)) & ~t.any(axis=(0, 2))
    query_only = m.any(axis=(0, 2)) & ~t.any(axis=(0, 2))
    assert neither.any() and query_only.any()
    assert np.isnan(dice[neither]).all() and (arvd[neither] == 0.0).all() and (rvd[neither] == 0.0).all()
    assert (dice[query_only] == 0.0).all() and np.isnan(arvd[query_only]).all() and np.isnan(rvd[query_only]).all()
    assert not np.isnan(dice[~neither]).any()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_per_slice_nsd_equals_2d_nsd_slice_by_slice(real_pair, axis, nsd_method):
    query, truth, _ = real_pair
    spacing = (1.4, 0.9, 1.1)
    in_plane = tuple(s for i, s in enumerate(spacing) if i != axis)
    for label in LABELS:
        m = query == label
        t = truth == label
        for tolerance in (0.0, 1.0, 2.5):
            expected = _reference_per_slice(
                lambda a, b, tol=tolerance: _reference_nsd(a, b, in_plane, tol) if a.any() and b.any() else 0.0,
                m,
                t,
                axis,
                True,
            )
            got = metrics.per_slice_nsd(m, t, spacing, tolerance, axis)
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0, err_msg=f"label {label} tol {tolerance}")


def test_per_slice_nsd_ignores_surfaces_in_neighbouring_slices(nsd_method):
    a = np.zeros((3, 10, 10), dtype=bool)
    b = np.zeros_like(a)
    a[0, 1:3, 1:3] = True
    b[0, 7:9, 7:9] = True  # in its own slice, a's square is more than 5 mm from b's
    b[1, 1:3, 1:3] = True  # ... but 1 mm from this one, in the next slice
    a[2, 4:7, 4:7] = True
    b[2, 4:7, 4:7] = True
    result = metrics.per_slice_nsd(a, b, ISOTROPIC_MM, 2.0, axis=0)
    np.testing.assert_array_equal(result, [0.0, 0.0, 1.0])
