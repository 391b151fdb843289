"""Reading and writing volumes and label maps: geometry kept, bad inputs refused with clear messages."""

import gzip
import os
import stat

import numpy as np
import pytest
import SimpleITK as sitk

from SegQCLib.errors import GeometryMismatchError, InputError
from SegQCLib.geometry import Geometry
from SegQCLib.io.case import load_case
from SegQCLib.io.image_files import read_image, read_labelmap, write_array, write_labelmap
from SegQCLib.io.volumes import LabelMap, SegmentStyle

GEOMETRY = Geometry((4, 5, 6), (0.7, 0.9, 2.5), (1.0, 2.0, 3.0))


def labels_array() -> np.ndarray:
    array = np.zeros(GEOMETRY.shape_zyx, dtype=np.uint8)
    array[1:3, 1:4, 2:5] = 1
    array[2, 2, 2] = 2
    return array


def write_sitk(path, array, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_label_map_round_trip_keeps_values_and_geometry(tmp_path, suffix):
    path = write_array(tmp_path / f"seg{suffix}", labels_array(), GEOMETRY)
    labelmap = read_labelmap(path)
    np.testing.assert_array_equal(labelmap.array, labels_array())
    assert labelmap.geometry.matches(GEOMETRY)


def test_seg_nrrd_round_trip_keeps_segment_names(tmp_path):
    names = {1: "anterior", 2: "posterior"}
    path = write_labelmap(tmp_path / "seg.seg.nrrd", LabelMap(labels_array(), GEOMETRY, names))
    labelmap = read_labelmap(path)
    np.testing.assert_array_equal(labelmap.array, labels_array())
    assert labelmap.names == {1: "anterior", 2: "posterior"}
    assert labelmap.geometry.matches(GEOMETRY)


HIPPOCAMPUS_TERMINOLOGY = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical "
                           "Structure~SCT^5366008^Hippocampus~^^~Anatomic codes - DICOM master list~^^~^^")


def test_seg_nrrd_round_trip_keeps_segment_colours_and_terminology(tmp_path):
    styles = {1: SegmentStyle((0.86, 0.45, 0.20), HIPPOCAMPUS_TERMINOLOGY), 2: SegmentStyle((0.2, 0.6, 0.9))}
    written = LabelMap(labels_array(), GEOMETRY, {1: "anterior", 2: "posterior"}, styles=styles)
    labelmap = read_labelmap(write_labelmap(tmp_path / "seg.seg.nrrd", written))
    assert labelmap.styles == styles
    again = read_labelmap(write_labelmap(tmp_path / "again.seg.nrrd", labelmap))
    assert again.styles == styles and again.names == written.names


def test_a_label_map_without_styles_writes_segments_without_colour_or_terminology(tmp_path):
    path = write_labelmap(tmp_path / "seg.seg.nrrd", LabelMap(labels_array(), GEOMETRY, {1: "a", 2: "b"}))
    assert read_labelmap(path).styles == {}
    header = path.read_bytes().split(b"\n\n", 1)[0]
    assert b"Segment0_Color:=" not in header and b"TerminologyEntry" not in header


@pytest.mark.skipif(os.name != "posix", reason="file permission bits are POSIX")
@pytest.mark.parametrize("name", ["seg.nii.gz", "seg.seg.nrrd"])
def test_written_files_get_the_permissions_of_any_new_file(tmp_path, name):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")  # what the umask gives an ordinary new file (e.g. 0644), not a private 0600
    path = write_labelmap(tmp_path / name, LabelMap(labels_array(), GEOMETRY, {1: "a", 2: "b"}))
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_real_case_image_and_labels_share_a_grid(hippocampus_cases):
    case = load_case(hippocampus_cases[0].images, hippocampus_cases[0].label)
    assert case.images[0].array.shape == case.segmentation.array.shape
    assert case.segmentation.labels == [1, 2]
    assert case.images[0].array.dtype == np.float32


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_labelmap(tmp_path / "nothing.nii.gz")


def test_empty_file_is_a_clear_error(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(tmp_path / "empty.nii.gz")


def test_corrupt_file_is_a_clear_error(tmp_path):
    (tmp_path / "corrupt.nii.gz").write_bytes(gzip.compress(b"not an image at all" * 10))
    with pytest.raises(InputError, match="Cannot read"):
        read_labelmap(tmp_path / "corrupt.nii.gz")


def test_non_integer_label_map_is_refused(tmp_path):
    array = labels_array().astype(np.float32) * 0.5
    with pytest.raises(InputError, match="non-integer"):
        read_labelmap(write_sitk(tmp_path / "prob.nii.gz", array))


def test_integer_valued_float_label_map_is_accepted(tmp_path):
    labelmap = read_labelmap(write_sitk(tmp_path / "float.nii.gz", labels_array().astype(np.float32)))
    assert labelmap.array.dtype == np.uint8
    assert labelmap.labels == [1, 2]


def test_negative_labels_are_refused(tmp_path):
    array = labels_array().astype(np.int16)
    array[0, 0, 0] = -1
    with pytest.raises(InputError, match="negative"):
        read_labelmap(write_sitk(tmp_path / "neg.nii.gz", array))


def test_two_dimensional_input_is_refused(tmp_path):
    with pytest.raises(InputError, match="2D"):
        read_labelmap(write_sitk(tmp_path / "flat.nii.gz", np.zeros((5, 6), np.uint8), spacing=(1.0, 1.0)))


def test_four_dimensional_input_is_refused(tmp_path):
    frame = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))
    sitk.WriteImage(sitk.JoinSeries([frame, frame]), str(tmp_path / "time.nii.gz"))
    with pytest.raises(InputError, match="4D"):
        read_image(tmp_path / "time.nii.gz")


def test_multi_component_image_is_refused(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.float32), isVector=True)
    sitk.WriteImage(image, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="components"):
        read_image(tmp_path / "rgb.nrrd")


def test_geometry_mismatch_names_the_difference(tmp_path):
    image = write_array(tmp_path / "img.nii.gz", np.zeros(GEOMETRY.shape_zyx, np.float32), GEOMETRY)
    shifted = Geometry(GEOMETRY.shape_zyx, GEOMETRY.spacing_xyz_mm, (1.0, 2.0, 13.0))
    seg = write_array(tmp_path / "seg.nii.gz", labels_array(), shifted)
    with pytest.raises(GeometryMismatchError, match="origin"):
        load_case([image], seg)


def test_images_on_different_grids_are_not_told_to_resample_the_segmentation(tmp_path):
    first = write_array(tmp_path / "t1.nii.gz", np.zeros(GEOMETRY.shape_zyx, np.float32), GEOMETRY)
    shifted = Geometry(GEOMETRY.shape_zyx, GEOMETRY.spacing_xyz_mm, (1.0, 2.0, 13.0))
    second = write_array(tmp_path / "t2.nii.gz", np.zeros(GEOMETRY.shape_zyx, np.float32), shifted)
    seg = write_array(tmp_path / "seg.nii.gz", labels_array(), GEOMETRY)
    with pytest.raises(GeometryMismatchError, match="Image 2") as raised:
        load_case([first, second], seg, resample_seg=True)  # the option does not apply to images
    assert "--resample-seg" not in str(raised.value)


def test_geometry_mismatch_can_be_resampled_onto_the_image_with_a_notice(tmp_path):
    image = write_array(tmp_path / "img.nii.gz", np.zeros(GEOMETRY.shape_zyx, np.float32), GEOMETRY)
    fine = Geometry((8, 5, 6), (0.7, 0.9, 1.25), (1.0, 2.0, 3.0 - 0.625))
    fine_labels = np.repeat(labels_array(), 2, axis=0)
    seg = write_array(tmp_path / "seg.nii.gz", fine_labels, fine)
    case = load_case([image], seg, resample_seg=True)
    assert case.segmentation.geometry.matches(GEOMETRY)
    assert case.notices and "resampled" in case.notices[0]
    assert set(np.unique(case.segmentation.array)) <= {0, 1, 2}


def test_writes_leave_no_temporary_files(tmp_path):
    write_array(tmp_path / "seg.nii.gz", labels_array(), GEOMETRY)
    assert [p.name for p in tmp_path.iterdir()] == ["seg.nii.gz"]
