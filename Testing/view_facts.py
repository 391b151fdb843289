"""Facts about rendered slice views, checked in the pixels (each ``check_*`` raises AssertionError saying what
is wrong).  The expected picture is computed from the data, never from the display pipeline under test: a
volume is sampled at every pixel's RAS position with the node's own voxel grid, a box from its voxel indices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from scipy import ndimage

# A pixel counts as changed by a layer when a colour channel moved by more than this (0..255).
CHANGED_LEVEL = 6
# Pixels this close (in pixels) to an expected edge are not judged: a voxel edge may cut a pixel centre.
EDGE_MARGIN_PX = 1


def sample(array_zyx: np.ndarray, geometry, ras: np.ndarray, outside: float = np.nan) -> np.ndarray:
    """Nearest-voxel values of a (z, y, x) array on ``geometry`` at RAS points (..., 3); ``outside`` beyond it."""
    return sample_index(array_zyx, ras_to_index(geometry, ras), outside)


def ras_to_index(geometry, ras: np.ndarray) -> np.ndarray:
    """Continuous (z, y, x) voxel indices of RAS points (..., 3)."""
    return np.asarray(geometry.lps_to_index_zyx(ras * np.array([-1.0, -1.0, 1.0])))


def sample_index(array_zyx: np.ndarray, index_zyx: np.ndarray, outside: float = np.nan) -> np.ndarray:
    index = np.rint(index_zyx).astype(int)
    inside = np.all((index >= 0) & (index < np.array(array_zyx.shape)), axis=-1)
    values = np.full(index_zyx.shape[:-1], outside, dtype=float)
    values[inside] = array_zyx[tuple(index[inside].T)]
    return values


def changed(with_layer: np.ndarray, without_layer: np.ndarray) -> np.ndarray:
    return np.abs(with_layer.astype(int) - without_layer.astype(int)).max(axis=-1) > CHANGED_LEVEL


def judged(expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(surely inside, surely outside) of an expected mask, leaving out pixels next to its edge."""
    return (ndimage.binary_erosion(expected, iterations=EDGE_MARGIN_PX),
            ~ndimage.binary_dilation(expected, iterations=EDGE_MARGIN_PX))


# ----------------------------------------------------------------------------------------------
# Layers on and off


@contextmanager
def layers_hidden(scene, overlay: bool = False, segmentations: bool = False, markups: bool = False) -> Iterator[None]:
    """Hide the foreground (error overlay), the segmentations and/or the markups; restore them afterwards."""
    restore = []
    if overlay:
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
            restore.append((composite.SetForegroundOpacity, composite.GetForegroundOpacity()))
            composite.SetForegroundOpacity(0.0)
    for wanted, class_name in ((segmentations, "vtkMRMLSegmentationDisplayNode"),
                               (markups, "vtkMRMLMarkupsDisplayNode")):
        if not wanted:
            continue
        for index in range(scene.GetNumberOfNodesByClass(class_name)):
            display = scene.GetNthNodeByClass(index, class_name)
            restore.append((display.SetVisibility, display.GetVisibility()))
            display.SetVisibility(False)
    try:
        yield
    finally:
        for setter, value in reversed(restore):
            setter(value)


def render_without(view, scene, **hidden) -> np.ndarray:
    with layers_hidden(scene, **hidden):
        return view.render()


# ----------------------------------------------------------------------------------------------
# Facts


def check_overlay(view, scene, probability_zyx: np.ndarray, geometry, threshold: float,
                  inside_ras_box=None) -> dict[str, float]:
    """The error overlay is drawn exactly where the probability (the data, on ``geometry``) reaches ``threshold``
    and is transparent below it.

    With ``inside_ras_box`` (a function RAS -> bool mask), the overlay must also be drawn inside that region
    (the report's top box).  Returns the measured fractions.
    """
    with layers_hidden(scene, segmentations=True, markups=True):
        with_overlay = view.render()
        with layers_hidden(scene, overlay=True):
            without_overlay = view.render()
    probability = sample(probability_zyx, geometry, view.pixel_ras(), outside=0.0)
    expected = probability >= threshold
    drawn = changed(with_overlay, without_overlay)
    inside, outside = judged(expected)
    assert inside.sum() > 0, f"{view.name}: no pixel reaches the threshold {threshold}: nothing to check"
    facts = {"drawn_where_expected": float(drawn[inside].mean()), "drawn_below_threshold": float(drawn[outside].mean())}
    assert facts["drawn_where_expected"] >= 0.98, f"{view.name}: overlay missing where p >= {threshold}: {facts}"
    assert facts["drawn_below_threshold"] <= 0.005, f"{view.name}: overlay drawn below the threshold: {facts}"
    if inside_ras_box is not None:
        in_box = inside_ras_box(view.pixel_ras())
        facts["drawn_in_top_box"] = float(drawn[in_box & inside].mean()) if np.any(in_box & inside) else 0.0
        assert facts["drawn_in_top_box"] >= 0.98, f"{view.name}: overlay not shown in the top error box: {facts}"
    return facts


def check_segment_outline(view, scene, labels_zyx: np.ndarray, geometry, label: int,
                          color_rgb: Sequence[float]) -> dict[str, float]:
    """The segment's outline is drawn in its colour along the edge of the segment in this view (the fill, at
    half opacity, does not count)."""
    with_segments = view.render()
    without_segments = render_without(view, scene, segmentations=True)
    mask = sample(labels_zyx, geometry, view.pixel_ras(), outside=0.0) == label
    edge = mask & ~ndimage.binary_erosion(mask)
    assert edge.sum() > 0, f"{view.name}: the segment {label} is not in this view: nothing to check"
    color = np.asarray(color_rgb, dtype=float) * 255.0
    contrast = np.linalg.norm(without_segments - color, axis=-1)
    in_colour = np.linalg.norm(with_segments - color, axis=-1) < 0.3 * contrast
    decidable = contrast > 40.0
    near_line = ndimage.binary_dilation(in_colour & decidable, iterations=1)
    along_edge = edge & decidable
    facts = {"edge_pixels_on_the_line": float(near_line[along_edge].mean()) if along_edge.any() else 0.0}
    far_from_edge = ~ndimage.binary_dilation(edge, iterations=2)
    line_pixels = in_colour & decidable
    facts["line_pixels_off_the_edge"] = float(line_pixels[far_from_edge].sum() / max(line_pixels.sum(), 1))
    # 0.85: where the error overlay is opaque next to the contour some edge pixels blend past the colour test
    # (Green, segment 2: 0.88); a hidden outline gives about 0.
    assert facts["edge_pixels_on_the_line"] >= 0.85, f"{view.name}: outline of segment {label} missing: {facts}"
    assert facts["line_pixels_off_the_edge"] <= 0.05, f"{view.name}: outline of {label} off its edge: {facts}"
    return facts


def box_corners_ras(geometry, bbox_zyx) -> np.ndarray:
    """The 8 corners (RAS) of a box given by voxel indices [start, stop): its voxels' outer faces."""
    start, stop = np.asarray(bbox_zyx[0], dtype=float) - 0.5, np.asarray(bbox_zyx[1], dtype=float) - 0.5
    corners = np.array([[z, y, x] for z in (start[0], stop[0]) for y in (start[1], stop[1])
                        for x in (start[2], stop[2])])
    return np.array([geometry.index_zyx_to_ras(corner) for corner in corners])


def box_mask(geometry, bbox_zyx):
    """A function RAS (..., 3) -> bool: inside the box's voxels."""

    def inside(ras: np.ndarray) -> np.ndarray:
        index = np.rint(ras_to_index(geometry, ras))
        return np.all((index >= np.asarray(bbox_zyx[0])) & (index < np.asarray(bbox_zyx[1])), axis=-1)

    return inside


def check_roi_frames_box(view, scene, corners_ras: np.ndarray, tolerance_px: float = 2.5) -> dict[str, float]:
    """The ROI is drawn as a frame around the box (edges within ``tolerance_px``) and leaves its inside as it
    was, so the overlay it frames stays visible."""
    with_roi = view.render()
    without_roi = render_without(view, scene, markups=True)
    drawn = changed(with_roi, without_roi)
    assert drawn.any(), f"{view.name}: the ROI is not drawn"
    expected = np.array([view.ras_to_pixel(corner) for corner in corners_ras])
    low, high = expected.min(axis=0), expected.max(axis=0)
    rows, cols = np.nonzero(drawn)
    found_low, found_high = np.array([rows.min(), cols.min()]), np.array([rows.max(), cols.max()])
    facts = {"edge_error_px": float(max(np.abs(found_low - low).max(), np.abs(found_high - high).max()))}
    assert facts["edge_error_px"] <= tolerance_px, (
        f"{view.name}: ROI drawn over rows/cols {found_low}..{found_high}, box is {low.round(1)}..{high.round(1)}")
    inner_low, inner_high = np.ceil(low + 3).astype(int), np.floor(high - 3).astype(int)
    if np.all(inner_high >= inner_low):
        inner = drawn[inner_low[0]:inner_high[0] + 1, inner_low[1]:inner_high[1] + 1]
        facts["inside_covered"] = float(inner.mean())
        assert facts["inside_covered"] == 0.0, f"{view.name}: the ROI covers what it frames: {facts}"
    return facts


def check_slice_shown(view, scene, image_zyx: np.ndarray, geometry, axis: int, expected_index: int
                      ) -> dict[str, float]:
    """The view shows slice ``expected_index`` along numpy ``axis`` of the image (the data, on ``geometry``): of all
    its slices, that one matches the rendered grey values best."""
    background = render_without(view, scene, overlay=True, segmentations=True, markups=True).mean(axis=-1)
    index = ras_to_index(geometry, view.pixel_ras())
    scores = []
    for candidate in range(image_zyx.shape[axis]):
        on_slice = index.copy()
        on_slice[..., axis] = candidate
        values = sample_index(image_zyx, on_slice)
        ok = np.isfinite(values)
        scores.append(np.corrcoef(values[ok], background[ok])[0, 1] if ok.sum() > 10 and values[ok].std() > 0
                      else -1.0)
    best = int(np.nanargmax(scores))
    facts = {"best_slice": best, "correlation": float(scores[expected_index])}
    assert best == expected_index, f"{view.name}: shows slice {best} (r={scores[best]:.3f}), not {expected_index}"
    assert facts["correlation"] >= 0.9, f"{view.name}: slice {expected_index} matches poorly: {facts}"
    return facts


def check_label_layer(view, scene, values_zyx: np.ndarray, geometry, inside_ras_box=None) -> dict[str, float]:
    """A label layer (e.g. the suggestion preview) is drawn exactly where ``values_zyx`` (the data, on ``geometry``)
    is non-zero and nowhere else; with ``inside_ras_box``, also drawn inside that region."""
    composites = [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                  for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
    with layers_hidden(scene, overlay=True, segmentations=True, markups=True):
        with_label = view.render()
        opacities = [c.GetLabelOpacity() for c in composites]
        for composite in composites:
            composite.SetLabelOpacity(0.0)
        try:
            without_label = view.render()
        finally:
            for composite, opacity in zip(composites, opacities):
                composite.SetLabelOpacity(opacity)
    expected = sample(values_zyx, geometry, view.pixel_ras(), outside=0.0) != 0
    drawn = changed(with_label, without_label)
    inside, outside = judged(expected)
    assert inside.sum() > 0, f"{view.name}: no labelled voxel in this view: nothing to check"
    facts = {"drawn_where_expected": float(drawn[inside].mean()), "drawn_elsewhere": float(drawn[outside].mean())}
    assert facts["drawn_where_expected"] >= 0.98, f"{view.name}: label layer missing where expected: {facts}"
    assert facts["drawn_elsewhere"] <= 0.005, f"{view.name}: label layer drawn where nothing is labelled: {facts}"
    if inside_ras_box is not None:
        in_box = inside_ras_box(view.pixel_ras())
        facts["drawn_in_box"] = float(drawn[in_box & inside].mean()) if np.any(in_box & inside) else 0.0
        assert facts["drawn_in_box"] >= 0.98, f"{view.name}: label layer not shown in the box: {facts}"
    return facts
