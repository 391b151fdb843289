"""Geometry: index <-> LPS/RAS transforms, Slicer's IJK-to-RAS matrix, slice axis choice."""

import numpy as np
import pytest
import SimpleITK as sitk

from SegQCLib.geometry import Geometry, lps_to_ras

OBLIQUE_DIRECTION = tuple(
    np.array([[0.0, 0.0, 1.0], [np.cos(0.3), -np.sin(0.3), 0.0], [np.sin(0.3), np.cos(0.3), 0.0]]).ravel())


def make_geometry(direction=OBLIQUE_DIRECTION) -> Geometry:
    return Geometry((7, 5, 4), (0.8, 1.1, 3.0), (10.0, -20.0, 5.0), direction)


def sitk_image(geometry: Geometry) -> sitk.Image:
    image = sitk.Image(geometry.shape_zyx[2], geometry.shape_zyx[1], geometry.shape_zyx[0], sitk.sitkUInt8)
    geometry.apply_to(image)
    return image


def test_index_to_lps_matches_simpleitk_for_an_oblique_grid():
    geometry = make_geometry()
    image = sitk_image(geometry)
    index_zyx = np.array([[3, 2, 1], [0, 0, 0], [6, 4, 3]])
    expected = [image.TransformIndexToPhysicalPoint([int(i) for i in idx[::-1]]) for idx in index_zyx]
    np.testing.assert_allclose(geometry.index_zyx_to_lps(index_zyx), expected, atol=1e-9)


def test_lps_to_index_inverts_index_to_lps():
    geometry = make_geometry()
    points = np.array([[1.5, 2.25, 3.0], [6.0, 0.0, 0.5]])
    np.testing.assert_allclose(geometry.lps_to_index_zyx(geometry.index_zyx_to_lps(points)), points, atol=1e-9)


def test_ras_flips_the_first_two_lps_axes():
    np.testing.assert_allclose(lps_to_ras(np.array([1.0, 2.0, 3.0])), [-1.0, -2.0, 3.0])


def test_ijk_to_ras_matrix_maps_slicer_ijk_to_the_same_point_as_the_zyx_index():
    geometry = make_geometry()
    ijk = np.array([1.0, 2.0, 3.0, 1.0])  # Slicer's IJK is (x, y, z)
    ras = geometry.ijk_to_ras_matrix() @ ijk
    np.testing.assert_allclose(ras[:3], geometry.index_zyx_to_ras(np.array([3.0, 2.0, 1.0])), atol=1e-9)


def test_geometry_round_trips_through_the_ijk_to_ras_matrix():
    geometry = make_geometry()
    restored = Geometry.from_ijk_to_ras_matrix(geometry.ijk_to_ras_matrix(), geometry.shape_zyx)
    assert restored.matches(geometry)


def test_slice_axis_is_the_coarsest_spacing_axis():
    # spacing (x, y, z) = (0.8, 1.1, 3.0): z is coarsest, numpy axis 0
    assert make_geometry().default_slice_axis() == 0
    assert Geometry((4, 4, 4), (3.0, 1.0, 1.0)).default_slice_axis() == 2


def test_slice_axis_falls_back_to_the_first_array_axis_when_isotropic():
    assert Geometry((4, 4, 4), (1.0, 1.0, 1.0)).default_slice_axis() == 0


def test_slice_axis_falls_back_when_two_axes_tie_for_coarsest():
    assert Geometry((4, 4, 4), (3.0, 3.0, 1.0)).default_slice_axis() == 0


def test_differences_name_every_mismatching_property():
    geometry = make_geometry()
    other = Geometry((7, 5, 5), (0.8, 1.1, 2.0), (10.0, -20.0, 6.0))
    found = " ".join(geometry.differences(other))
    for word in ("size", "spacing", "origin", "direction"):
        assert word in found


def test_non_positive_spacing_is_rejected():
    with pytest.raises(ValueError, match="Spacing"):
        Geometry((2, 2, 2), (1.0, 0.0, 1.0))


def test_sub_grid_origin_is_the_world_position_of_its_first_voxel():
    geometry = make_geometry()
    crop = geometry.with_shape((2, 2, 2), offset_zyx=(1, 2, 3))
    np.testing.assert_allclose(crop.origin_lps_mm, geometry.index_zyx_to_lps(np.array([1, 2, 3])), atol=1e-9)
