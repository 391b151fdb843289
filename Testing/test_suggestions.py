"""Suggested corrections: the suggested segmentation and the edit of every error box, on real cases with known errors.

With the true error as Ê (Ê_c = (M == c) xor (T == c)) the estimated truth is the truth, so the suggestion must be
the truth, each box's edit must be exactly the error region it frames, its expected gain the true gain, and
accepting every edit must give back the truth.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from SegQCLib.errors import InputError
from SegQCLib.geometry import Geometry
from SegQCLib.io.image_files import read_labelmap
from SegQCLib.io.volumes import LabelMap
from SegQCLib.quality.edit_regions import EDIT_CONNECTIVITY_3D, framed_errors
from SegQCLib.quality.metrics import dice
from SegQCLib.quality.postprocess import build_report
from SegQCLib.quality.regions import RegionParams
from SegQCLib.quality.suggested_labels import suggested_labels
from SegQCLib.quality.suggestion import suggest
from SegQCLib.quality.suggestion_settings import SuggestionParams

pytestmark = pytest.mark.realdata


def ball(shape, centre, radius) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def true_error(query: np.ndarray, truth: np.ndarray, labels=(1, 2)) -> dict[int, np.ndarray]:
    return {label: ((query == label) ^ (truth == label)).astype(np.float32) for label in labels}


@pytest.fixture(scope="module")
def known_errors(hippocampus_cases):
    """A real case whose query has three separate known errors (face-disconnected in 3D):

    ``missing``: a ball of class 1 left out; ``spurious``: a ball of class 2 added in the background beyond the
    structure; ``dropped``: the largest piece of class 2 erased on one slice.
    """
    truth_map = read_labelmap(hippocampus_cases[3].label)
    truth = truth_map.array
    shape = truth.shape
    anterior = np.argwhere(truth == 1)
    missing = ball(shape, anterior[len(anterior) // 2], 3) & (truth == 1)
    distance = ndimage.distance_transform_edt(truth == 0)
    far = np.argwhere(distance > 8)
    spurious = ball(shape, far[len(far) // 2], 4) & (truth == 0)
    posterior_slices = np.flatnonzero((truth == 2).any(axis=(1, 2)))
    dropped_slice = int(posterior_slices[len(posterior_slices) // 2])
    dropped = np.zeros(shape, dtype=bool)
    dropped[dropped_slice] = truth[dropped_slice] == 2
    dropped &= ~ndimage.binary_dilation(missing | spurious, ndimage.generate_binary_structure(3, 1))
    parts, _ = ndimage.label(dropped, ndimage.generate_binary_structure(3, EDIT_CONNECTIVITY_3D))
    dropped = parts == np.argmax(np.bincount(parts[parts > 0]))  # the largest piece of class 2 on that slice
    query = truth.copy()
    query[missing] = 0
    query[spurious] = 2
    query[dropped] = 0
    regions = {"missing": missing, "spurious": spurious, "dropped": dropped}
    union = missing | spurious | dropped
    _, count = ndimage.label(union, ndimage.generate_binary_structure(3, EDIT_CONNECTIVITY_3D))
    assert count == 3, "the three errors must be separate regions"
    segmentation = LabelMap(query, truth_map.geometry)
    error_prob = true_error(query, truth)
    report = build_report(segmentation, error_prob)
    suggestion = suggest(segmentation, error_prob, report)
    return {"truth": truth, "query": query, "regions": regions, "report": report, "suggestion": suggestion,
            "segmentation": segmentation, "error_prob": error_prob}


def test_the_suggested_segmentation_of_the_true_error_is_the_truth(known_errors):
    np.testing.assert_array_equal(known_errors["suggestion"].segmentation, known_errors["truth"])
    assert known_errors["report"].suggestion.changed_voxels == int(np.count_nonzero(
        known_errors["query"] != known_errors["truth"]))


def test_every_box_gets_an_edit_and_each_edit_is_exactly_the_error_region_its_boxes_frame(known_errors):
    report, suggestion, regions = known_errors["report"], known_errors["suggestion"], known_errors["regions"]
    assert report.boxes
    for box in report.boxes:
        assert box.edit_id is not None, f"box {box} frames a known error but has no edit"
        edit_voxels = suggestion.full_mask(box.edit_id)
        start, stop = box.bbox_zyx
        framed = np.zeros_like(edit_voxels)
        framed[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]] = True
        framed &= known_errors["error_prob"][box.label] > 0
        region = [name for name, mask in regions.items() if (mask & framed).any()]
        assert len(region) == 1, f"box {box.bbox_zyx} frames {region}"
        np.testing.assert_array_equal(edit_voxels, regions[region[0]], err_msg=f"edit of the box on {region[0]}")
        assert box.edit_voxels == int(regions[region[0]].sum())
        assert box.edit_volume_mm3 == pytest.approx(box.edit_voxels * known_errors["segmentation"].geometry
                                                    .voxel_volume_mm3)


def test_an_error_over_several_slices_is_one_edit_shared_by_its_boxes_and_reaching_slices_without_a_box(
        known_errors):
    report, suggestion, missing = known_errors["report"], known_errors["suggestion"], known_errors["regions"]["missing"]
    on_missing = [box for box in report.boxes if box.label == 1]
    assert len({box.slice for box in on_missing}) > 1
    assert len({box.edit_id for box in on_missing}) == 1
    slices_of_error = set(np.flatnonzero(missing.any(axis=(1, 2))).tolist())
    assert slices_of_error > {box.slice for box in on_missing}, "the ball's end caps have no box of their own"
    np.testing.assert_array_equal(suggestion.full_mask(on_missing[0].edit_id), missing)


def test_edits_are_numbered_in_the_order_of_their_best_box(known_errors):
    report = known_errors["report"]
    first_seen = list(dict.fromkeys(box.edit_id for box in report.boxes))
    assert first_seen == list(range(1, len(first_seen) + 1))
    for edit in known_errors["suggestion"].edits:
        assert edit.score == max(box.score for box in report.boxes if box.edit_id == edit.id)


def test_accepting_every_offered_edit_gives_back_the_truth(known_errors):
    suggestion = known_errors["suggestion"]
    assert all(edit.offered for edit in suggestion.edits)
    np.testing.assert_array_equal(suggestion.accept_all(known_errors["query"]), known_errors["truth"])


def test_accepting_one_edit_fixes_exactly_its_error_region_and_nothing_else(known_errors):
    suggestion, query, truth = known_errors["suggestion"], known_errors["query"], known_errors["truth"]
    for edit in suggestion.edits:
        labels = query.copy()
        applied = suggestion.accept(labels, edit.id)
        region = suggestion.full_mask(edit.id)
        np.testing.assert_array_equal(labels[region], truth[region])
        np.testing.assert_array_equal(labels[~region], query[~region])
        assert applied.voxels == int(region.sum())


def test_expected_gain_from_the_true_error_is_the_true_gain(known_errors):
    suggestion, query, truth = known_errors["suggestion"], known_errors["query"], known_errors["truth"]
    for edit in suggestion.edits:
        after = suggestion.accept_all(query, [edit.id])
        true_before = dice(query == edit.label, truth == edit.label)
        assert edit.dice_est_before == pytest.approx(true_before, abs=1e-12)
        assert edit.gain_dice_est == pytest.approx(dice(after == edit.label, truth == edit.label) - true_before,
                                                   abs=1e-12)
        assert edit.gain_dice_est > 0
    assert known_errors["report"].suggestion.case_dice_est_after_offered == pytest.approx(1.0)


def test_additions_and_removals_are_counted_for_the_edits_class(known_errors):
    by_region = {}
    for edit in known_errors["suggestion"].edits:
        mask = known_errors["suggestion"].full_mask(edit.id)
        name = next(n for n, region in known_errors["regions"].items() if (region & mask).any())
        by_region[name] = edit
    assert (by_region["missing"].label, by_region["missing"].removed_voxels) == (1, 0)
    assert by_region["missing"].added_voxels == int(known_errors["regions"]["missing"].sum())
    assert (by_region["spurious"].label, by_region["spurious"].added_voxels) == (2, 0)
    assert by_region["spurious"].removed_voxels == int(known_errors["regions"]["spurious"].sum())
    start, stop = by_region["spurious"].bbox_zyx
    found = ndimage.find_objects(known_errors["regions"]["spurious"].astype(int))[0]
    assert [start, stop] == [[s.start for s in found], [s.stop for s in found]]


def test_undo_restores_the_query_but_keeps_a_later_hand_edit(known_errors):
    suggestion, query = known_errors["suggestion"], known_errors["query"]
    edit = suggestion.edits[0]
    labels = query.copy()
    applied = suggestion.accept(labels, edit.id)
    hand = applied.indices[0]
    labels.reshape(-1)[hand] = 7  # the reviewer paints one voxel after accepting
    assert suggestion.undo(labels, applied) == applied.voxels - 1
    expected = query.copy()
    expected.reshape(-1)[hand] = 7
    np.testing.assert_array_equal(labels, expected)


def test_preview_shows_what_would_be_added_and_removed_where_the_edit_is(known_errors):
    suggestion, query = known_errors["suggestion"], known_errors["query"]
    for edit in suggestion.edits:
        preview = suggestion.preview(query, edit.id)
        crop, mask = suggestion.mask(edit.id)
        assert preview.crop == crop
        np.testing.assert_array_equal(preview.added | preview.removed, mask)
        assert int(preview.added.sum()) == edit.added_voxels and int(preview.removed.sum()) == edit.removed_voxels
        assert not preview.other.any()
        assert not suggestion.preview(suggestion.accept_all(query, [edit.id]), edit.id).added.any()


def test_a_label_map_on_another_grid_is_refused(known_errors):
    with pytest.raises(InputError, match="grid"):
        known_errors["suggestion"].accept(np.zeros((3, 3, 3), np.uint8), 1)
    with pytest.raises(InputError, match="No suggested edit 99"):
        known_errors["suggestion"].edit(99)


def test_a_label_swap_gives_overlapping_edits_of_both_classes_that_write_the_same_labels(hippocampus_cases):
    truth_map = read_labelmap(hippocampus_cases[5].label)
    truth = truth_map.array
    anterior = np.argwhere(truth == 1)
    swapped = ball(truth.shape, anterior[len(anterior) // 2], 3) & (truth == 1)
    query = truth.copy()
    query[swapped] = 2
    segmentation = LabelMap(query, truth_map.geometry)
    error_prob = true_error(query, truth)
    report = build_report(segmentation, error_prob)
    suggestion = suggest(segmentation, error_prob, report)
    by_label = {edit.label: edit for edit in suggestion.edits}
    assert sorted(by_label) == [1, 2]
    for edit in by_label.values():
        np.testing.assert_array_equal(suggestion.full_mask(edit.id), swapped)
    one = suggestion.accept_all(query, [by_label[1].id])
    both = suggestion.accept_all(query, [by_label[2].id, by_label[1].id])
    np.testing.assert_array_equal(one, truth)
    np.testing.assert_array_equal(both, truth)


def test_an_edit_below_the_threshold_is_listed_but_not_offered(known_errors):
    gains = sorted(edit.gain_dice_est for edit in known_errors["suggestion"].edits)
    threshold = (gains[0] + gains[1]) / 2
    report = build_report(known_errors["segmentation"], known_errors["error_prob"])
    suggestion = suggest(known_errors["segmentation"], known_errors["error_prob"], report,
                         SuggestionParams(threshold, "test"))
    assert [edit.offered for edit in suggestion.edits] == [edit.gain_dice_est >= threshold
                                                           for edit in suggestion.edits]
    assert sum(not edit.offered for edit in suggestion.edits) == 1
    assert all(box.edit_offered == suggestion.edit(box.edit_id).offered for box in report.boxes)
    withheld = next(edit for edit in suggestion.edits if not edit.offered)
    accepted = suggestion.accept_all(known_errors["query"])
    np.testing.assert_array_equal(accepted[suggestion.full_mask(withheld.id)],
                                  known_errors["query"][suggestion.full_mask(withheld.id)])
    assert (report.suggestion.min_gain_dice, report.suggestion.min_gain_source) == (threshold, "test")
    assert report.suggestion.case_dice_est_after_offered < 1.0


def test_a_perfect_query_gets_no_suggestion(hippocampus_cases):
    truth = read_labelmap(hippocampus_cases[0].label)
    error_prob = {label: np.zeros(truth.array.shape, np.float32) for label in (1, 2)}
    report = build_report(truth, error_prob)
    suggestion = suggest(truth, error_prob, report)
    assert suggestion.edits == [] and report.suggestion.changed_voxels == 0
    np.testing.assert_array_equal(suggestion.segmentation, truth.array)


# --- the suggested label map on arbitrary maps --------------------------------------------------------


def reference_suggestion(query: np.ndarray, error_prob: dict[int, np.ndarray]) -> np.ndarray:
    """Literal definition: stack background and class scores, arg-max, ties keep the query's label."""
    labels = sorted(error_prob)
    truths = [np.where(query == c, 1 - error_prob[c], error_prob[c]).astype(np.float32) for c in labels]
    scores = np.stack([np.float32(1) - np.sum(truths, axis=0, dtype=np.float32), *truths])
    values = np.array([0, *labels])
    best = values[np.argmax(scores, axis=0)]
    own = np.take_along_axis(scores, np.searchsorted(values, query)[None], axis=0)[0]
    return np.where(own >= scores.max(axis=0), query, best).astype(query.dtype)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_suggested_labels_are_the_arg_max_of_the_estimated_truth_with_ties_kept(hippocampus_cases, seed):
    truth = read_labelmap(hippocampus_cases[seed].label).array
    rng = np.random.default_rng(seed)
    # Coarse steps of 0.25 make many exact ties between labels.
    error_prob = {c: (np.round(rng.random(truth.shape) * 4) / 4).astype(np.float32) for c in (1, 2)}
    np.testing.assert_array_equal(suggested_labels(truth, error_prob), reference_suggestion(truth, error_prob))


def test_a_tie_keeps_the_query_label():
    query = np.zeros((1, 1, 3), np.uint8)
    query[0, 0, 1] = 1
    error_prob = {1: np.full((1, 1, 3), 0.5, np.float32)}
    np.testing.assert_array_equal(suggested_labels(query, error_prob), query)


# --- edit regions against a literal reference on noisy maps --------------------------------------------


def reference_edits(query, suggested, error_prob, boxes, geometry, slice_axis, params) -> dict[int, np.ndarray]:
    """Per box index, the voxels of its edit, computed box by box and component by component (slow)."""
    structure = ndimage.generate_binary_structure(3, EDIT_CONNECTIVITY_3D)
    components = {}
    for label in error_prob:
        components[label] = ndimage.label((suggested == label) != (query == label), structure)[0]
    framed = {label: framed_errors(error_prob[label], geometry, slice_axis, params) for label in error_prob}
    linked: list[set] = []  # sets of (label, component) per box
    for box in boxes:
        start, stop = box.bbox_zyx
        window = tuple(slice(a, b) for a, b in zip(start, stop))
        found = components[box.label][window][framed[box.label][window]]
        linked.append({(box.label, int(c)) for c in np.unique(found) if c})
    groups: list[set] = []  # components joined through shared boxes (union of overlapping sets)
    for found in linked:
        merged = [g for g in groups if g & found]
        for g in merged:
            groups.remove(g)
        groups.append(set(found).union(*merged))
    result = {}
    for index, found in enumerate(linked):
        if not found:
            continue
        group = next(g for g in groups if g & found)
        mask = np.zeros(query.shape, dtype=bool)
        for label, component in group:
            mask |= components[label] == component
        result[index] = mask
    return result


@pytest.mark.parametrize("seed", [0, 1])
def test_edit_regions_match_a_literal_reference_on_smooth_noisy_maps(hippocampus_cases, seed):
    truth = read_labelmap(hippocampus_cases[7 + seed].label)
    rng = np.random.default_rng(seed)
    error_prob = {}
    for label in (1, 2):
        near = ndimage.binary_dilation(truth.array == label, iterations=2) & ~ndimage.binary_erosion(
            truth.array == label, iterations=2)
        noise = ndimage.gaussian_filter(rng.random(truth.array.shape), 1.5)
        noise = (noise - noise.min()) / (noise.max() - noise.min())
        error_prob[label] = np.clip(near * noise * 1.6, 0, 1).astype(np.float32)
    report = build_report(truth, error_prob)
    suggestion = suggest(truth, error_prob, report)
    assert len(suggestion.edits) >= 2, "the noisy maps should make several edits"
    expected = reference_edits(truth.array, suggestion.segmentation, error_prob, report.boxes, truth.geometry,
                               report.slice_axis, RegionParams())
    for index, box in enumerate(report.boxes):
        if index not in expected:
            assert box.edit_id is None
            continue
        np.testing.assert_array_equal(suggestion.full_mask(box.edit_id), expected[index], err_msg=f"box {index}")


def test_every_voxel_of_an_edit_changes_the_class_of_its_box():
    geometry = Geometry((4, 20, 20))
    query = np.zeros(geometry.shape_zyx, np.uint8)
    query[:, 5:15, 5:15] = 1
    error_prob = {1: np.zeros(geometry.shape_zyx, np.float32)}
    error_prob[1][1:3, 3:17, 3:17] = 0.9  # grows the square by 2 pixels and removes its core on two slices
    segmentation = LabelMap(query, geometry)
    report = build_report(segmentation, error_prob, None)
    suggestion = suggest(segmentation, error_prob, report)
    for edit in suggestion.edits:
        mask = suggestion.full_mask(edit.id)
        assert np.all((suggestion.segmentation[mask] == edit.label) != (query[mask] == edit.label))
