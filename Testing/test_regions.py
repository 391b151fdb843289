"""Error extraction and error boxes (SegQC secs. 3.3-3.4): what each step must do, on hand-made and real cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from SegQCLib.errors import InputError
from SegQCLib.geometry import Geometry
from SegQCLib.quality import regions
from SegQCLib.quality.regions import RegionParams, extract_errors, find_error_boxes, in_plane_axes, unify_boxes

# Parameters that keep every component and box, so a test sees one step at a time.
RAW = RegionParams(extract_errors=False, merge_distance_mm=0.0, min_box_area_mm2=0.0, max_box_slice_fraction=1.0)
ISOTROPIC = Geometry((6, 40, 50))


def _slice_index(slice_axis: int, index: int, a: slice, b: slice) -> tuple:
    """Index tuple selecting rows a, cols b of slice ``index`` along ``slice_axis``."""
    full: list = [None, None, None]
    full[slice_axis] = index
    axis_a, axis_b = in_plane_axes(slice_axis)
    full[axis_a], full[axis_b] = a, b
    return tuple(full)


def _reference_extraction(binary: np.ndarray, slice_axis: int, band_px: int, min_area_mm2: float,
                          pixel_area_mm2: float) -> np.ndarray:
    """The extraction written literally, one slice and one component at a time (slow reference): keep a
    component whole when a pixel of it survives ``band_px`` iterations of cross erosion and it is large enough."""
    cross = ndimage.generate_binary_structure(2, 1)
    square = ndimage.generate_binary_structure(2, 2)
    out = np.zeros_like(binary)
    for index in range(binary.shape[slice_axis]):
        plane = np.take(binary, index, axis=slice_axis)
        core = ndimage.binary_erosion(plane, cross, iterations=band_px, border_value=1) if band_px else plane
        labels, count = ndimage.label(plane, square)
        kept = np.zeros_like(plane)
        for label in range(1, count + 1):
            component = labels == label
            if (component & core).any() and component.sum() * pixel_area_mm2 >= min_area_mm2:
                kept |= component
        out[_slice_index(slice_axis, index, slice(None), slice(None))] = kept
    return out


def _reference_component_boxes(binary: np.ndarray, slice_axis: int) -> set[tuple]:
    """Bounding boxes of 8-connected components found slice by slice (slow reference), as zyx start+stop."""
    boxes = set()
    square = ndimage.generate_binary_structure(2, 2)
    axis_a, axis_b = in_plane_axes(slice_axis)
    for index in range(binary.shape[slice_axis]):
        labels, _ = ndimage.label(np.take(binary, index, axis=slice_axis), square)
        for found in ndimage.find_objects(labels):
            start, stop = [0, 0, 0], [0, 0, 0]
            start[slice_axis], stop[slice_axis] = index, index + 1
            start[axis_a], stop[axis_a] = found[0].start, found[0].stop
            start[axis_b], stop[axis_b] = found[1].start, found[1].stop
            boxes.add((*start, *stop))
    return boxes


def _box_set(boxes) -> set[tuple]:
    return {(*box.bbox_zyx[0], *box.bbox_zyx[1]) for box in boxes}


def _real_error(case) -> tuple[Geometry, dict[int, np.ndarray]]:
    """True per-class error maps of a plausible faulty segmentation of a real case.

    The query is the ground truth shifted by two voxels along x (boundary errors on many slices) with a
    block of label 1 erased (a missed part), the kind of mistakes a reviewer fixes.
    """
    _, truth = case
    labels = truth.array
    query = np.roll(labels, 2, axis=2)
    z, y, x = np.nonzero(labels == 1)
    centre = (int(np.median(z)), int(np.median(y)), int(np.median(x)))
    block = query[centre[0] - 3:centre[0] + 3, centre[1] - 4:centre[1] + 4, :]  # a view: edits reach query
    block[block == 1] = 0
    return truth.geometry, {c: ((query == c) != (labels == c)).astype(np.float32) for c in (1, 2)}


# --- error extraction ---------------------------------------------------------------------------------
@pytest.mark.parametrize("band_px, kept", [(1, True), (2, True), (3, False)])
def test_extraction_keeps_an_error_whole_when_part_of_it_is_wider_than_the_band(band_px, kept):
    binary = np.zeros((3, 20, 20), dtype=bool)
    binary[1, 5:10, 5:10] = True  # 5 pixels wide: survives a band of 1 or 2 pixels, not of 3
    out = extract_errors(binary, 0, (1.0, 1.0, 1.0), band_px, min_component_area_mm2=0.0)
    np.testing.assert_array_equal(out, binary if kept else np.zeros_like(binary))


def test_extraction_with_zero_band_keeps_the_error():
    binary = np.zeros((2, 12, 12), dtype=bool)
    binary[0, 2:5, 3:9] = True
    np.testing.assert_array_equal(extract_errors(binary, 0, (1.0, 1.0, 1.0), 0, 0.0), binary)


def test_extraction_removes_thin_errors_entirely():
    binary = np.zeros((2, 20, 20), dtype=bool)
    binary[0, 4:6, 2:18] = True  # a 2-pixel-wide sliver: observer variability, not an error
    assert not extract_errors(binary, 0, (1.0, 1.0, 1.0), 1, 0.0).any()


def test_a_thin_tail_attached_to_a_real_error_stays_part_of_its_region():
    binary = np.zeros((1, 20, 30), dtype=bool)
    binary[0, 4:9, 2:7] = True  # a real error ...
    binary[0, 6, 7:25] = True  # ... continued by a one-pixel sliver along the contour
    np.testing.assert_array_equal(extract_errors(binary, 0, (1.0, 1.0, 1.0), 1, 0.0), binary)


def test_extraction_works_per_slice_not_in_3d():
    binary = np.zeros((5, 12, 12), dtype=bool)
    binary[2, 2:9, 2:9] = True  # one slice thick: a 3D erosion would delete it
    out = extract_errors(binary, 0, (1.0, 1.0, 1.0), 1, 0.0)
    np.testing.assert_array_equal(out, binary)


def test_image_edge_is_not_an_error_contour():
    binary = np.zeros((1, 10, 10), dtype=bool)
    binary[0, 0:2, 0:6] = True  # two pixels deep at the field of view's edge: the edge is no contour
    np.testing.assert_array_equal(extract_errors(binary, 0, (1.0, 1.0, 1.0), 1, 0.0), binary)


def test_extraction_drops_components_below_the_area_in_mm2_of_the_in_plane_spacing():
    # In-plane pixels of 0.5 mm x 2 mm = 1 mm2; the 10 mm slice spacing must not enter the area.
    binary = np.zeros((2, 20, 20), dtype=bool)
    binary[0, 1:4, 1:3] = True  # 3x2 = 6 pixels: 6 mm2
    binary[0, 8:11, 8:11] = True  # 3x3 = 9 pixels: 9 mm2
    out = extract_errors(binary, 0, (10.0, 0.5, 2.0), 0, min_component_area_mm2=8.0)
    expected = np.zeros_like(binary)
    expected[0, 8:11, 8:11] = True
    np.testing.assert_array_equal(out, expected)


def test_the_band_in_mm_becomes_pixels_per_in_plane_axis():
    params = RegionParams(band_width_mm=1.0)
    assert params.band_px((3.0, 0.5, 1.0), 0) == (2, 1)
    assert params.band_px((3.0, 0.5, 2.5), 0) == (2, 1)  # at least one pixel, however coarse the grid
    assert RegionParams(band_width_px=3).band_px((3.0, 0.5, 1.0), 0) == (3, 3)
    assert RegionParams(extract_errors=False).band_px((1.0, 1.0, 1.0), 0) == (0, 0)


def test_boxes_from_the_true_error_map_find_every_substantive_error_of_real_queries(hippocampus_sample):
    """With Ê = the true error, every true error region (as counted for the localisation figures) gets a
    box that is right.  Shaving the band off each error, as SegQC's extraction does, found 66 % of them."""
    from SegQCLib.quality.evaluation import LocalisationCounts, localisation_counts
    from training.queries import LOCAL_MIX, VALIDATION_MIX, perturbation_queries

    total = LocalisationCounts(0, 0, 0, 0)
    for index, (_, _, truth) in enumerate(hippocampus_sample):
        geometry, axis = truth.geometry, truth.geometry.default_slice_axis()
        rng = np.random.default_rng(index)
        for mix in (VALIDATION_MIX, LOCAL_MIX):
            for query in perturbation_queries(truth.array, (1, 2), 6, rng, mix):
                errors = {c: ((query.mask == c) ^ (truth.array == c)).astype(np.float32) for c in (1, 2)}
                boxes = find_error_boxes(errors, geometry, axis)
                for label in (1, 2):
                    a, b = in_plane_axes(axis)
                    rows = [[x.slice, x.bbox_zyx[0][a], x.bbox_zyx[0][b], x.bbox_zyx[1][a], x.bbox_zyx[1][b]]
                            for x in boxes if x.label == label]
                    total = total + localisation_counts(np.reshape(rows, (-1, 5)), errors[label] > 0, axis,
                                                        geometry.spacing_zyx_mm)
    assert total.regions > 50
    assert total.recall >= 0.95 and total.precision >= 0.95


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_extraction_equals_the_literal_per_slice_algorithm_on_random_blobs(slice_axis):
    rng = np.random.default_rng(slice_axis)
    binary = ndimage.gaussian_filter(rng.random((14, 30, 26)), 1.5) > 0.52
    spacing = (1.0, 0.8, 1.25)
    axis_a, axis_b = in_plane_axes(slice_axis)
    pixel_area = spacing[axis_a] * spacing[axis_b]
    out = extract_errors(binary, slice_axis, spacing, 1, 3.0)
    np.testing.assert_array_equal(out, _reference_extraction(binary, slice_axis, 1, 3.0, pixel_area))
    assert out.any() and out.sum() < binary.sum()


def test_extraction_equals_the_literal_algorithm_on_real_error_maps(hippocampus_sample):
    for _, image, truth in hippocampus_sample:
        geometry, error = _real_error((image, truth))
        spacing = geometry.spacing_zyx_mm
        for label, slice_axis in ((1, 0), (2, 1), (2, 2)):
            binary = error[label] > 0.5
            axis_a, axis_b = in_plane_axes(slice_axis)
            reference = _reference_extraction(binary, slice_axis, 1, 2.0, spacing[axis_a] * spacing[axis_b])
            np.testing.assert_array_equal(extract_errors(binary, slice_axis, spacing, 1, 2.0), reference)


def test_extraction_rejects_bad_input():
    with pytest.raises(InputError):
        extract_errors(np.zeros((4, 4), dtype=bool), 0, (1.0, 1.0, 1.0), 1, 0.0)
    with pytest.raises(InputError):
        extract_errors(np.zeros((2, 4, 4), dtype=bool), 3, (1.0, 1.0, 1.0), 1, 0.0)
    with pytest.raises(InputError):
        extract_errors(np.zeros((2, 4, 4), dtype=bool), 0, (1.0, 1.0, 1.0), -1, 0.0)


# --- connected components and boxes -------------------------------------------------------------------
@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_a_tube_connected_in_3d_gives_one_box_per_slice(slice_axis):
    geometry = Geometry((8, 9, 10))
    prob = np.zeros(geometry.shape_zyx, dtype=np.float32)
    tube: list = [slice(2, 5)] * 3
    tube[slice_axis] = slice(None)
    prob[tuple(tube)] = 0.9
    boxes = find_error_boxes({1: prob}, geometry, slice_axis, RAW)
    assert sorted(box.slice for box in boxes) == list(range(geometry.shape_zyx[slice_axis]))
    for box in boxes:
        start, stop = box.bbox_zyx
        assert stop[slice_axis] - start[slice_axis] == 1 and start[slice_axis] == box.slice
        assert [start[a] for a in in_plane_axes(slice_axis)] == [2, 2]
        assert [stop[a] for a in in_plane_axes(slice_axis)] == [5, 5]


def test_diagonally_touching_pixels_form_one_component():
    prob = np.zeros((1, 6, 6), dtype=np.float32)
    prob[0, 1, 1] = prob[0, 2, 2] = prob[0, 3, 3] = 1.0
    boxes = find_error_boxes({1: prob}, Geometry((1, 6, 6)), 0, RAW)
    assert [box.bbox_zyx for box in boxes] == [[[0, 1, 1], [1, 4, 4]]]


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_boxes_equal_per_slice_component_boxes_on_real_error_maps(hippocampus_sample, slice_axis):
    for _, image, truth in hippocampus_sample:
        geometry, error = _real_error((image, truth))
        for label in (1, 2):
            boxes = find_error_boxes({label: error[label]}, geometry, slice_axis, RAW)
            assert boxes
            assert _box_set(boxes) == _reference_component_boxes(error[label] > 0.5, slice_axis)


def test_scanning_for_the_error_extent_in_slabs_finds_the_same_boxes(monkeypatch, hippocampus_case):
    geometry, error = _real_error(hippocampus_case)
    whole = find_error_boxes(error, geometry, 0)
    monkeypatch.setattr(regions, "SCAN_SLAB_VOXELS", 7 * error[1].shape[1] * error[1].shape[2])  # 7-slice slabs
    assert find_error_boxes(error, geometry, 0) == whole
    assert whole


def test_box_size_and_area_use_the_anisotropic_spacing():
    geometry = Geometry((4, 30, 40), spacing_xyz_mm=(0.5, 2.0, 3.0))  # zyx spacing (3, 2, 0.5) mm
    prob = np.zeros(geometry.shape_zyx, dtype=np.float32)
    prob[1, 4:10, 6:20] = 1.0
    (box,) = find_error_boxes({1: prob}, geometry, 0, RAW)
    assert box.bbox_zyx == [[1, 4, 6], [2, 10, 20]]
    assert box.size_mm == pytest.approx([3.0, 12.0, 7.0])
    assert box.area_mm2 == pytest.approx(12.0 * 7.0)
    (side,) = find_error_boxes({1: prob}, geometry, 2, RAW)[:1]  # slicing along x: in-plane (z, y)
    assert side.area_mm2 == pytest.approx(3.0 * 12.0)
    assert side.size_mm == pytest.approx([3.0, 12.0, 0.5])


def test_box_centres_match_the_geometry_transforms_in_lps_and_ras():
    angle = np.deg2rad(30)
    direction = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
    geometry = Geometry((5, 20, 30), spacing_xyz_mm=(0.7, 1.3, 2.5), origin_lps_mm=(10.0, -20.0, 5.0),
                        direction=direction)
    prob = np.zeros(geometry.shape_zyx, dtype=np.float32)
    prob[3, 4:9, 10:17] = 0.8
    (box,) = find_error_boxes({1: prob}, geometry, 0, RAW)
    centre_index = np.array([3.0, (4 + 8) / 2, (10 + 16) / 2])
    np.testing.assert_allclose(box.center_lps, geometry.index_zyx_to_lps(centre_index))
    np.testing.assert_allclose(box.center_ras, geometry.index_zyx_to_ras(centre_index))
    np.testing.assert_allclose(geometry.lps_to_index_zyx(np.array(box.center_lps)), centre_index, atol=1e-9)


# --- unification ----------------------------------------------------------------------------------------
def _two_blobs(gap_px: int, axis: int) -> np.ndarray:
    prob = np.zeros((2, 40, 40), dtype=np.float32)
    prob[0, 2:6, 2:6] = 1.0
    if axis == 1:
        prob[0, 6 + gap_px:10 + gap_px, 2:6] = 1.0
    else:
        prob[0, 2:6, 6 + gap_px:10 + gap_px] = 1.0
    return prob


def test_boxes_closer_than_the_merge_distance_are_unified():
    params = RegionParams(extract_errors=False, merge_distance_mm=5.0, min_box_area_mm2=0.0)
    boxes = find_error_boxes({1: _two_blobs(4, axis=2)}, Geometry((2, 40, 40)), 0, params)
    assert [box.bbox_zyx for box in boxes] == [[[0, 2, 2], [1, 6, 14]]]


def test_boxes_at_or_beyond_the_merge_distance_stay_apart():
    params = RegionParams(extract_errors=False, merge_distance_mm=5.0, min_box_area_mm2=0.0)
    boxes = find_error_boxes({1: _two_blobs(5, axis=2)}, Geometry((2, 40, 40)), 0, params)
    assert len(boxes) == 2


def test_merge_distance_is_measured_in_mm_along_each_axis():
    params = RegionParams(extract_errors=False, merge_distance_mm=5.0, min_box_area_mm2=0.0)
    geometry = Geometry((2, 40, 40), spacing_xyz_mm=(0.5, 2.0, 1.0))  # x: 0.5 mm, y: 2 mm
    # A 4-pixel gap is 2 mm along x (unified) but 8 mm along y (kept apart).
    assert len(find_error_boxes({1: _two_blobs(4, axis=2)}, geometry, 0, params)) == 1
    assert len(find_error_boxes({1: _two_blobs(4, axis=1)}, geometry, 0, params)) == 2


def test_diagonal_gaps_use_the_euclidean_distance():
    prob = np.zeros((1, 30, 30), dtype=np.float32)
    prob[0, 2:5, 2:5] = 1.0
    prob[0, 9:12, 9:12] = 1.0  # gap 4 px along y and along x: 5.66 mm apart diagonally
    params = RegionParams(extract_errors=False, merge_distance_mm=5.0, min_box_area_mm2=0.0)
    assert len(find_error_boxes({1: prob}, Geometry((1, 30, 30)), 0, params)) == 2
    params = RegionParams(extract_errors=False, merge_distance_mm=6.0, min_box_area_mm2=0.0)
    assert len(find_error_boxes({1: prob}, Geometry((1, 30, 30)), 0, params)) == 1


def test_unification_repeats_until_no_two_boxes_are_close():
    # C is 5.15 mm from A and from B, but A and B unify (4.5 mm gap) into a box only 4.75 mm from C.
    geometry = Geometry((1, 20, 40), spacing_xyz_mm=(0.25, 0.5, 1.0))
    prob = np.zeros(geometry.shape_zyx, dtype=np.float32)
    prob[0, 0:2, 0:2] = 1.0  # A
    prob[0, 11:13, 0:2] = 1.0  # B
    prob[0, 6:7, 21:25] = 1.0  # C
    params = RegionParams(extract_errors=False, merge_distance_mm=5.0, min_box_area_mm2=0.0)
    boxes = find_error_boxes({1: prob}, geometry, 0, params)
    assert [box.bbox_zyx for box in boxes] == [[[0, 0, 0], [1, 13, 25]]]


def test_boxes_on_different_slices_or_classes_are_never_unified():
    prob = np.zeros((3, 20, 20), dtype=np.float32)
    prob[0, 2:6, 2:6] = 1.0
    prob[1, 2:6, 2:6] = 1.0
    params = RegionParams(extract_errors=False, merge_distance_mm=50.0, min_box_area_mm2=0.0)
    boxes = find_error_boxes({1: prob, 2: prob.copy()}, Geometry((3, 20, 20)), 0, params)
    assert sorted((box.label, box.slice) for box in boxes) == [(1, 0), (1, 1), (2, 0), (2, 1)]


def test_unify_boxes_matches_brute_force_on_many_random_boxes():
    rng = np.random.default_rng(7)
    count = 400
    slices = rng.integers(0, 5, count)
    low = rng.integers(0, 200, (count, 2))
    high = low + rng.integers(1, 6, (count, 2))
    spacing = np.array([0.7, 1.1])
    got = unify_boxes(slices, low, high, spacing, 4.0)

    # Brute force: sweep over all pairs, merging each close pair as found, until a sweep merges nothing.
    boxes = [(int(s), list(map(int, lo)), list(map(int, hi))) for s, lo, hi in zip(slices, low, high)]
    merged = True
    while merged:
        merged = False
        i = 0
        while i < len(boxes):
            j = i + 1
            while j < len(boxes):
                (si, li, hi_), (sj, lj, hj) = boxes[i], boxes[j]
                gaps = [max(0, lj[k] - hi_[k], li[k] - hj[k]) * spacing[k] for k in range(2)]
                if si == sj and np.hypot(*gaps) < 4.0:
                    boxes[i] = (si, [min(li[k], lj[k]) for k in range(2)], [max(hi_[k], hj[k]) for k in range(2)])
                    del boxes[j]
                    merged = True
                else:
                    j += 1
            i += 1
    expected = sorted((s, *lo, *hi) for s, lo, hi in boxes)
    assert sorted(zip(got[0].tolist(), *got[1].T.tolist(), *got[2].T.tolist())) == expected
    assert len(expected) < count


@pytest.mark.parametrize("spacing_xyz_mm, slice_axis", [((1.0, 1.0, 1.0), 0), ((0.6, 0.8, 2.0), 0),
                                                       ((0.5, 1.5, 0.7), 1), ((0.9, 0.4, 1.2), 2)])
def test_grouping_crowded_specks_first_gives_the_same_boxes(monkeypatch, spacing_xyz_mm, slice_axis):
    # Many specks trigger a dilation-based grouping before box unification; the boxes must not change.
    rng = np.random.default_rng(11)
    prob = (rng.random((10, 60, 70)) < 0.01).astype(np.float32)
    prob[:, 10:20, 15:40] = 0.8
    geometry = Geometry(prob.shape, spacing_xyz_mm=spacing_xyz_mm)
    params = RegionParams(extract_errors=False, merge_distance_mm=3.0, min_box_area_mm2=0.0, max_box_slice_fraction=1.0)
    monkeypatch.setattr(regions, "PREMERGE_MIN_COMPONENTS", 10**9)
    direct = find_error_boxes({1: prob}, geometry, slice_axis, params)
    monkeypatch.setattr(regions, "PREMERGE_MIN_COMPONENTS", 0)
    grouped = find_error_boxes({1: prob}, geometry, slice_axis, params)
    assert len(direct) > 5
    assert _box_set(grouped) == _box_set(direct)
    assert [b.score for b in grouped] == pytest.approx([b.score for b in direct])


@pytest.mark.parametrize("spacing_mm", [(1.0, 1.0), (0.8, 0.8), (0.3, 2.0), (0.1, 0.1), (5.0, 5.0)])
def test_grouping_radii_never_join_components_whose_boxes_are_merge_distance_apart(spacing_mm):
    radius_a, radius_b = regions.premerge_radii_px(spacing_mm, 5.0)
    assert np.hypot(2 * radius_a * spacing_mm[0], 2 * radius_b * spacing_mm[1]) < 5.0
    assert radius_a >= 0 and radius_b >= 0


# --- filtering, scores, sorting -------------------------------------------------------------------------
def test_boxes_below_the_minimum_area_are_dropped():
    geometry = Geometry((1, 30, 30), spacing_xyz_mm=(0.5, 0.5, 1.0))  # 0.25 mm2 pixels
    prob = np.zeros(geometry.shape_zyx, dtype=np.float32)
    prob[0, 2:8, 2:8] = 1.0  # 36 px = 9 mm2: kept at the 9 mm2 limit
    prob[0, 20:25, 20:25] = 1.0  # 25 px = 6.25 mm2: dropped
    params = RegionParams(extract_errors=False, merge_distance_mm=0.0, min_box_area_mm2=9.0)
    boxes = find_error_boxes({1: prob}, geometry, 0, params)
    assert [box.bbox_zyx for box in boxes] == [[[0, 2, 2], [1, 8, 8]]]


def test_boxes_larger_than_half_the_slice_are_dropped():
    geometry = Geometry((2, 20, 20), spacing_xyz_mm=(1.0, 2.0, 1.0))
    prob = np.zeros(geometry.shape_zyx, dtype=np.float32)
    prob[0, 0:10, 0:20] = 1.0  # exactly half the slice: kept
    prob[1, 0:11, 0:20] = 1.0  # more than half: dropped
    params = RegionParams(extract_errors=False, merge_distance_mm=0.0, min_box_area_mm2=0.0)
    boxes = find_error_boxes({1: prob}, geometry, 0, params)
    assert [box.slice for box in boxes] == [0]


def test_score_is_the_summed_probability_inside_the_box_and_max_prob_its_maximum():
    prob = np.zeros((2, 20, 20), dtype=np.float32)
    prob[1, 5:10, 5:10] = 0.75
    prob[1, 7, 7] = 0.95
    prob[1, 5, 5] = 0.2  # below threshold but inside the box: counts in the score
    prob[1, 15, 15] = 0.3  # outside every box: does not count
    (box,) = find_error_boxes({1: prob}, Geometry((2, 20, 20)), 0, RAW)
    assert box.score == pytest.approx(prob[1, 5:10, 5:10].sum(dtype=np.float64))
    assert box.max_prob == pytest.approx(0.95)


def test_boxes_of_all_classes_are_sorted_by_score_descending():
    prob1 = np.zeros((3, 30, 30), dtype=np.float32)
    prob2 = np.zeros((3, 30, 30), dtype=np.float32)
    prob1[0, 1:4, 1:4] = 0.9  # score 8.1
    prob1[2, 10:20, 10:20] = 0.6  # 60
    prob2[1, 1:6, 1:6] = 0.8  # 20
    boxes = find_error_boxes({1: prob1, 2: prob2}, Geometry((3, 30, 30)), 0, RAW)
    assert [(box.label, box.slice) for box in boxes] == [(1, 2), (2, 1), (1, 0)]
    assert [box.score for box in boxes] == sorted((box.score for box in boxes), reverse=True)


def test_extraction_removes_specks_before_boxing_and_boxes_the_whole_error():
    prob = np.zeros((1, 30, 30), dtype=np.float32)
    prob[0, 5:15, 5:15] = 0.9
    prob[0, 22:24, 22:24] = 0.9  # 2x2 speck: nothing of it survives the 1-pixel band
    params = RegionParams(extract_errors=True, band_width_px=1, min_component_area_mm2=4.0, min_box_area_mm2=0.0)
    boxes = find_error_boxes({1: prob}, Geometry((1, 30, 30)), 0, params)
    assert [box.bbox_zyx for box in boxes] == [[[0, 5, 5], [1, 15, 15]]]


@pytest.mark.parametrize("slice_axis", [1, 2])
def test_every_slice_axis_gives_the_boxes_of_the_transposed_volume(slice_axis):
    rng = np.random.default_rng(3)
    prob = ndimage.gaussian_filter(rng.random((12, 30, 34)), 1.2).astype(np.float32)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    geometry = Geometry(prob.shape, spacing_xyz_mm=(0.9, 1.1, 1.6))
    params = RegionParams(min_box_area_mm2=1.0, merge_distance_mm=3.0)
    boxes = find_error_boxes({1: prob}, geometry, slice_axis, params)
    # Moving slice_axis to the front and permuting spacing to match must give the same boxes.
    order = (slice_axis, *in_plane_axes(slice_axis))
    moved = np.ascontiguousarray(np.transpose(prob, order))
    spacing_zyx = np.asarray(geometry.spacing_zyx_mm)[list(order)]
    moved_geometry = Geometry(moved.shape, spacing_xyz_mm=tuple(spacing_zyx[::-1]))
    moved_boxes = find_error_boxes({1: moved}, moved_geometry, 0, params)
    assert boxes
    as_moved = {(tuple(np.asarray(b.bbox_zyx[0])[list(order)]), tuple(np.asarray(b.bbox_zyx[1])[list(order)]),
                 round(b.score, 3), round(b.area_mm2, 6)) for b in boxes}
    assert as_moved == {(tuple(b.bbox_zyx[0]), tuple(b.bbox_zyx[1]), round(b.score, 3), round(b.area_mm2, 6))
                        for b in moved_boxes}


def test_real_case_boxes_cover_every_error_voxel_and_score_it(hippocampus_case):
    geometry, error = _real_error(hippocampus_case)
    params = RegionParams(extract_errors=False, merge_distance_mm=2.0, min_box_area_mm2=0.0)
    boxes = find_error_boxes(error, geometry, geometry.default_slice_axis(), params)
    for label, prob in error.items():
        covered = np.zeros(prob.shape, dtype=bool)
        for box in (b for b in boxes if b.label == label):
            (z0, y0, x0), (z1, y1, x1) = box.bbox_zyx
            covered[z0:z1, y0:y1, x0:x1] = True
            assert box.score == pytest.approx(prob[z0:z1, y0:y1, x0:x1].sum())
        assert covered[prob > 0.5].all()


def test_real_case_default_parameters_give_plausible_boxes(hippocampus_case):
    geometry, error = _real_error(hippocampus_case)
    boxes = find_error_boxes(error, geometry, geometry.default_slice_axis())
    assert boxes, "the erased block of label 1 must be found"
    slice_area = np.prod([geometry.shape_zyx[a] * geometry.spacing_zyx_mm[a]
                          for a in in_plane_axes(geometry.default_slice_axis())])
    for box in boxes:
        assert RegionParams().min_box_area_mm2 <= box.area_mm2 <= slice_area / 2
        assert box.score > 0


# --- empty and bad input ----------------------------------------------------------------------------------
def test_empty_or_subthreshold_error_maps_give_no_boxes():
    geometry = Geometry((3, 10, 10))
    assert find_error_boxes({1: np.zeros(geometry.shape_zyx, np.float32)}, geometry, 0) == []
    assert find_error_boxes({1: np.full(geometry.shape_zyx, 0.5, np.float32)}, geometry, 0, RAW) == []
    assert find_error_boxes({}, geometry, 0) == []


def test_an_error_removed_entirely_by_extraction_gives_no_boxes():
    prob = np.zeros((2, 10, 10), dtype=np.float32)
    prob[0, 3:5, 1:9] = 1.0
    assert find_error_boxes({1: prob}, Geometry((2, 10, 10)), 0, RegionParams(min_box_area_mm2=0.0)) == []


def test_bad_inputs_raise_clear_errors():
    geometry = Geometry((3, 10, 10))
    with pytest.raises(InputError, match="shape"):
        find_error_boxes({1: np.zeros((3, 10, 11), np.float32)}, geometry, 0)
    with pytest.raises(InputError, match="slice axis"):
        find_error_boxes({1: np.zeros((3, 10, 10), np.float32)}, geometry, -1)
    with pytest.raises(InputError):
        RegionParams(threshold=1.5)
    with pytest.raises(InputError):
        RegionParams(band_width_px=1.5)
    with pytest.raises(InputError):
        RegionParams(merge_distance_mm=-1.0)
    with pytest.raises(InputError):
        RegionParams(max_box_slice_fraction=0.0)
