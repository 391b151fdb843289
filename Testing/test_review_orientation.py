"""Pictures are shown as a radiologist expects, whatever the file's axis order: the patient's right on the
viewer's left, anterior (axial) or superior (coronal, sagittal) at the top, anterior on the left (sagittal)."""

from __future__ import annotations

import numpy as np

from SegQCLib.geometry import Geometry
from SegQCLib.review.orientation import Orientation, View

SHAPE_ZYX = (6, 7, 8)


def marked_volume(geometry: Geometry, lps_direction: tuple[float, float, float]) -> np.ndarray:
    """A volume whose only non-zero voxel is the corner farthest along ``lps_direction`` (unit LPS axes)."""
    direction = np.asarray(geometry.direction).reshape(3, 3)  # columns: x, y, z index axes
    index_xyz = [geometry.shape_zyx[2 - i] - 1 if direction[:, i] @ lps_direction > 0 else 0 for i in range(3)]
    volume = np.zeros(geometry.shape_zyx, np.uint8)
    volume[index_xyz[2], index_xyz[1], index_xyz[0]] = 1
    return volume


def marker_on(orientation: Orientation, volume: np.ndarray, view: View) -> tuple[int, int, tuple[int, int]]:
    canonical = orientation.canonical(volume)
    plane = int(np.argwhere(canonical)[0][view.canonical_axis])
    picture = orientation.plane(canonical, view, plane)
    row, col = (int(v) for v in np.argwhere(picture)[0])
    return row, col, picture.shape


# LPS unit vectors: +x left, +y posterior, +z superior.
RIGHT_ANTERIOR_SUPERIOR = (-1.0, -1.0, 1.0)


def check_radiological(geometry: Geometry) -> None:
    orientation = Orientation.from_geometry(geometry)
    volume = marked_volume(geometry, RIGHT_ANTERIOR_SUPERIOR)
    row, col, _ = marker_on(orientation, volume, View.AXIAL)
    assert (row, col) == (0, 0)  # axial: anterior at the top, the patient's right on the left
    row, col, _ = marker_on(orientation, volume, View.CORONAL)
    assert (row, col) == (0, 0)  # coronal: superior at the top, right on the left
    row, col, _ = marker_on(orientation, volume, View.SAGITTAL)
    assert (row, col) == (0, 0)  # sagittal: superior at the top, anterior on the left


def test_an_lps_volume_is_shown_in_radiological_convention():
    check_radiological(Geometry(SHAPE_ZYX))


def test_an_ras_stored_volume_is_flipped_to_the_same_pictures():
    check_radiological(Geometry(SHAPE_ZYX, direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)))


def test_a_sagittally_stored_volume_is_permuted_to_the_same_pictures():
    # index x -> posterior, y -> inferior, z -> left: slices along array axis 0 (z) are sagittal.
    geometry = Geometry(SHAPE_ZYX, direction=(0, 0, 1.0, 1.0, 0, 0, 0, -1.0, 0))
    check_radiological(geometry)
    assert Orientation.from_geometry(geometry).view_of_array_axis(0) is View.SAGITTAL


def test_a_slightly_oblique_volume_takes_the_closest_axes():
    angle = np.deg2rad(10)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    orientation = Orientation.from_geometry(Geometry(SHAPE_ZYX, direction=tuple(rotation.ravel())))
    assert orientation.axes == (0, 1, 2) and orientation.flipped == (False, False, False)


def test_each_view_names_its_edges():
    assert View.AXIAL.edge_labels == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert View.CORONAL.edge_labels == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert View.SAGITTAL.edge_labels == {"top": "S", "bottom": "I", "left": "A", "right": "P"}


def test_a_box_lands_where_its_voxels_are_shown():
    geometry = Geometry(SHAPE_ZYX, direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    orientation = Orientation.from_geometry(geometry)
    bbox = [[2, 1, 3], [3, 4, 6]]  # slice 2, rows 1..3, columns 3..5 (array indices, end exclusive)
    volume = np.zeros(SHAPE_ZYX, np.uint8)
    volume[2:3, 1:4, 3:6] = 1
    for view in View:
        canonical = orientation.canonical(volume)
        plane = int(np.argwhere(canonical)[0][view.canonical_axis])
        shown = np.argwhere(orientation.plane(canonical, view, plane))
        r0, c0, r1, c1 = orientation.plane_rect(bbox, view, plane)
        assert (r0, c0, r1, c1) == (shown[:, 0].min(), shown[:, 1].min(), shown[:, 0].max() + 1, shown[:, 1].max() + 1)
    assert orientation.plane_rect(bbox, View.AXIAL, 0) is None  # that plane does not cut the box
