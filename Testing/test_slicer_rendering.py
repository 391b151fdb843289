"""What a Slicer user sees after QC, checked in rendered pixels: Slicer's own display pipeline (slice logics,
layer blending, the segmentation and markups displayable managers) from slicer-core, rendered off-screen.

A real hippocampus case with a perturbed segmentation is checked by ``SegQCLogic.runQC`` with the bundled
model; the Red, Yellow and Green views are rendered and the facts a reviewer relies on are checked in the
pixels: the overlay is drawn where the predicted error reaches the threshold (and inside the top error box)
and nowhere below it, segment outlines follow the segments, the ROI frames the box without covering it, and
"next slice" shows the ranked slice.  Each check is also shown to fail on a planted error.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("slicer", reason="slicer-core cannot be imported; pip install slicer-core")

import slicer  # noqa: E402
from offscreen_views import OffscreenSliceViews, offscreen_rendering_problem  # noqa: E402
from SegQCModuleLib.logic import NodeRole, OverlaySettings  # noqa: E402
from slicer_scene import CLASS_NAMES, SlicerApp, build_review, true_error  # noqa: E402
from view_facts import (  # noqa: E402
    box_corners_ras,
    box_mask,
    check_overlay,
    check_roi_frames_box,
    check_segment_outline,
    check_slice_shown,
)

from SegQCLib.quality.postprocess import build_report  # noqa: E402

OVERLAY_THRESHOLD = 0.3


FIELD_SMOOTHING_VOXELS = 2.0


@pytest.fixture(scope="module")
def shown(hippocampus_case):
    """The scene after QC results, the views fitted and moved to the top error box.

    The error maps are the case's true errors with probabilities from a smooth random field (fixed seed), so
    that they hold every value from 0 to 1 where the errors are: what is tested here is what the views draw from
    the maps, which must not change when the bundled model does."""
    problem = offscreen_rendering_problem()
    if problem:
        pytest.skip(problem)
    app = SlicerApp()
    review = build_review(*hippocampus_case, scene=app.scene)
    logic = review["logic"]
    prepared = logic.prepareInputs([review["volume"]], review["segmentation"], CLASS_NAMES)
    errors = true_error(prepared.case.segmentation.array, review["truth"])
    field = ndimage.gaussian_filter(np.random.default_rng(3).random(review["truth"].shape), FIELD_SMOOTHING_VOXELS)
    field = (field - field.min()) / (field.max() - field.min())
    graded = {label: (mask * field).astype(np.float32) for label, mask in errors.items()}
    report = build_report(prepared.case.segmentation, graded, class_names=CLASS_NAMES).to_dict()
    result = logic.applyResult(prepared, report, graded)
    assert result.report["boxes"], "the true error of the perturbed case gave no error box"
    views = OffscreenSliceViews(app)
    views.fit()
    top = result.report["boxes"][0]
    logic.showOverlay(top["label"], 0.6, OVERLAY_THRESHOLD)
    logic.jumpToBox(0)
    geometry = review["image"].geometry
    axis = result.report["slice_axis"]
    facing = views.facing(geometry.ijk_to_ras_matrix()[:3, 2 - axis])
    # The expected pictures come from the data: the engine's error maps (copied before any test plants an
    # error in the nodes) and the arrays of the case, all on the image's grid.
    probabilities = {label: np.array(slicer.util.arrayFromVolume(node)) for label, node in result.overlayNodes.items()}
    return {**review, "app": app, "views": views, "result": result, "top": top, "geometry": geometry,
            "facing": facing, "axis": axis, "probabilities": probabilities}


def overlay_of(shown, label):
    return shown["result"].overlayNodes[label]


def check_top_overlay(shown, view=None, box=True):
    top = shown["top"]
    return check_overlay(view or shown["facing"], shown["scene"], shown["probabilities"][top["label"]],
                         shown["geometry"], OVERLAY_THRESHOLD, box_mask(shown["geometry"], top["bbox_zyx"]) if box
                         else None)


# ----------------------------------------------------------------------------------------------
# Overlay


def test_the_overlay_is_drawn_where_the_error_reaches_the_threshold_and_in_the_top_box(shown):
    assert check_top_overlay(shown)["drawn_in_top_box"] >= 0.98


@pytest.mark.parametrize("name", ["Red", "Yellow", "Green"])
def test_the_overlay_is_transparent_below_the_threshold_in_every_view(shown, name):
    check_top_overlay(shown, shown["views"][name], box=False)


def test_a_shifted_overlay_fails_the_check(shown):
    overlay = overlay_of(shown, shown["top"]["label"])
    origin = list(overlay.GetOrigin())
    overlay.SetOrigin(origin[0] + 3.0, origin[1] + 3.0, origin[2] + 3.0)
    try:
        with pytest.raises(AssertionError, match="overlay"):
            check_top_overlay(shown)
    finally:
        overlay.SetOrigin(*origin)


def test_an_overlay_shown_without_threshold_fails_the_check(shown):
    display = overlay_of(shown, shown["top"]["label"]).GetDisplayNode()
    display.SetThreshold(0.0, 1.0)
    try:
        with pytest.raises(AssertionError, match="below the threshold"):
            check_top_overlay(shown)
    finally:
        display.SetThreshold(OVERLAY_THRESHOLD, 1.0)


# ----------------------------------------------------------------------------------------------
# Segment outlines


def segment_color(shown, label):
    segmentation = shown["segmentation"].GetSegmentation()
    segment_id = shown["logic"].segmentIdForLabel(label)
    return segmentation.GetSegment(segment_id).GetColor()


@contextmanager
def views_on_segment(shown, label):
    """Every view through the segment's centre of mass (then back to the top box)."""
    centre = ndimage.center_of_mass(shown["wrong"] == label)
    shown["logic"].jumpToPoint(shown["geometry"].index_zyx_to_ras(np.round(centre)))
    try:
        yield
    finally:
        shown["logic"].jumpToBox(0)


@pytest.mark.parametrize("label", [1, 2])
@pytest.mark.parametrize("name", ["Red", "Yellow", "Green"])
def test_segment_outlines_follow_the_segments(shown, label, name):
    with views_on_segment(shown, label):
        check_segment_outline(shown["views"][name], shown["scene"], shown["wrong"], shown["geometry"], label,
                              segment_color(shown, label))


def test_hidden_outlines_fail_the_check(shown):
    display = shown["segmentation"].GetDisplayNode()
    display.SetVisibility2DOutline(False)
    try:
        with views_on_segment(shown, 1), pytest.raises(AssertionError, match="outline of segment 1 missing"):
            check_segment_outline(shown["facing"], shown["scene"], shown["wrong"], shown["geometry"], 1,
                                  segment_color(shown, 1))
    finally:
        display.SetVisibility2DOutline(True)


# ----------------------------------------------------------------------------------------------
# ROI


def test_the_roi_frames_the_top_box_without_covering_it(shown):
    corners = box_corners_ras(shown["geometry"], shown["top"]["bbox_zyx"])
    facts = check_roi_frames_box(shown["facing"], shown["scene"], corners)
    assert facts["edge_error_px"] <= 2.5  # the frame line is two pixels wide; a box edge may fall between pixels


def test_a_misplaced_roi_fails_the_check(shown):
    roi = shown["logic"].findNode(NodeRole.ROI)
    centre = [0.0, 0.0, 0.0]
    roi.GetCenter(centre)
    roi.SetCenter(centre[0] + 3.0, centre[1] - 3.0, centre[2])
    try:
        with pytest.raises(AssertionError, match="ROI drawn over"):
            check_roi_frames_box(shown["facing"], shown["scene"],
                                 box_corners_ras(shown["geometry"], shown["top"]["bbox_zyx"]))
    finally:
        roi.SetCenter(*centre)


def test_an_roi_with_an_opaque_fill_fails_the_check(shown):
    display = shown["logic"].findNode(NodeRole.ROI).GetDisplayNode()
    fill, opacity = display.GetFillVisibility(), display.GetFillOpacity()
    display.SetFillVisibility(True)
    display.SetFillOpacity(1.0)
    try:
        with pytest.raises(AssertionError, match="covers what it frames"):
            check_roi_frames_box(shown["facing"], shown["scene"],
                                 box_corners_ras(shown["geometry"], shown["top"]["bbox_zyx"]))
    finally:
        display.SetFillVisibility(fill)
        display.SetFillOpacity(opacity)


# ----------------------------------------------------------------------------------------------
# Jumps


def test_next_slice_shows_the_ranked_slice(shown):
    logic, slices = shown["logic"], shown["result"].report["slices"]
    logic.jumpToSlice(1)
    try:
        facts = check_slice_shown(shown["facing"], shown["scene"], shown["image"].array, shown["geometry"],
                                  shown["axis"], slices[1]["index"])
        assert facts["best_slice"] == slices[1]["index"]
    finally:
        logic.jumpToBox(0)


def test_a_jump_to_the_wrong_slice_fails_the_check(shown):
    logic, slices = shown["logic"], shown["result"].report["slices"]
    wrong = (slices[1]["index"] + 4) % shown["geometry"].shape_zyx[shown["axis"]]
    point = shown["geometry"].index_zyx_to_ras(np.where(np.arange(3) == shown["axis"], wrong,
                                                        np.asarray(shown["geometry"].shape_zyx) / 2.0))
    logic.jumpToPoint(point)
    try:
        with pytest.raises(AssertionError, match="not"):
            check_slice_shown(shown["facing"], shown["scene"], shown["image"].array, shown["geometry"],
                              shown["axis"], slices[1]["index"])
    finally:
        logic.jumpToBox(0)


def test_the_views_show_the_first_box_after_qc(shown):
    """After a run every view is centred on the top box (what `jump to box` promises), seen in the pixels."""
    view = shown["facing"]
    facts = check_slice_shown(view, shown["scene"], shown["image"].array, shown["geometry"], shown["axis"],
                              shown["top"]["slice"])
    assert facts["correlation"] >= 0.9
    assert shown["logic"].shownOverlaySettings() == OverlaySettings(shown["top"]["label"], pytest.approx(0.6),
                                                                    pytest.approx(OVERLAY_THRESHOLD))
