"""Error maps are written as 8-bit probabilities with their scale in the NIfTI header, and every reader gets
the probabilities back: SimpleITK (SegQC itself, ITK), nibabel, and 3D Slicer's volume reader (slicer-core)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from SegQCLib.geometry import Geometry
from SegQCLib.io.image_files import read_image, write_array, write_probability_map
from SegQCLib.io.probability_maps import PROBABILITY_STEP, quantize_probabilities
from SegQCLib.io.volumes import LabelMap
from SegQCLib.quality.outputs import QCResult, read_error_probs
from SegQCLib.quality.postprocess import build_report

# An oblique grid, so that a reader that got the orientation wrong would put the voxels elsewhere.
DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
GEOMETRY = Geometry((6, 7, 8), (0.8, 0.9, 2.5), (10.0, -20.0, 30.0), DIRECTION)
HALF_STEP = PROBABILITY_STEP / 2 + 1e-7
NIFTI_UINT8 = 2


def probabilities() -> np.ndarray:
    prob = np.random.default_rng(0).random(GEOMETRY.shape_zyx).astype(np.float32)
    prob[0, 0, :3] = (0.0, 1.0, 0.5)
    return prob


@pytest.fixture()
def written(tmp_path):
    return write_probability_map(tmp_path / "error_prob_1.nii.gz", probabilities(), GEOMETRY)


def test_simpleitk_reads_float_probabilities_within_half_a_step_on_the_same_grid(written):
    volume = read_image(written)
    assert volume.array.dtype == np.float32
    assert np.abs(volume.array - probabilities()).max() <= HALF_STEP
    assert volume.geometry.matches(GEOMETRY), volume.geometry.differences(GEOMETRY)


def test_zero_one_and_the_range_are_exact(written):
    array = read_image(written).array
    assert array[0, 0, 0] == 0.0 and array[0, 0, 1] == 1.0
    assert array.min() >= 0.0 and array.max() <= 1.0


def test_the_file_holds_uint8_voxels_with_a_scale_of_one_over_255(written):
    header = gzip.decompress(written.read_bytes())[:348]
    assert struct.unpack_from("<i", header, 0)[0] == 348
    assert struct.unpack_from("<h", header, 70)[0] == NIFTI_UINT8
    slope, intercept = struct.unpack_from("<ff", header, 112)
    assert slope == pytest.approx(1 / 255) and intercept == 0.0


def test_it_is_smaller_than_a_float32_map(written, tmp_path):
    float_map = write_array(tmp_path / "float.nii.gz", probabilities(), GEOMETRY)
    assert written.stat().st_size < float_map.stat().st_size / 2


def test_nibabel_reads_the_probabilities_and_the_same_grid(written):
    nibabel = pytest.importorskip("nibabel")
    image = nibabel.load(str(written))
    array = np.asarray(image.get_fdata(dtype=np.float32)).transpose(2, 1, 0)  # nibabel is (x, y, z)
    assert np.abs(array - probabilities()).max() <= HALF_STEP
    reference = nibabel.load(str(write_array(written.parent / "reference.nii.gz", probabilities(), GEOMETRY)))
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-5)


def test_slicer_volume_reader_gets_float_probabilities(written):
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    from vtk.util.numpy_support import vtk_to_numpy

    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(written))
    assert storage.ReadData(node)
    image = node.GetImageData()
    array = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(GEOMETRY.shape_zyx)
    assert image.GetScalarTypeAsString() == "float"
    assert np.abs(array - probabilities()).max() <= HALF_STEP
    assert node.GetSpacing() == pytest.approx(GEOMETRY.spacing_xyz_mm)


def test_values_outside_the_unit_interval_are_clipped():
    codes = quantize_probabilities(np.array([-0.5, 0.0, 0.2, 1.0, 1.7], np.float32))
    np.testing.assert_array_equal(codes, [0, 0, 51, 255, 255])


def test_a_written_result_is_read_back_by_segqc_estimate_within_half_a_step(tmp_path):
    seg = np.zeros(GEOMETRY.shape_zyx, np.uint8)
    seg[2:4, 2:5, 2:6] = 1
    segmentation = LabelMap(seg, GEOMETRY)
    error_prob = {1: probabilities()}
    result = QCResult(build_report(segmentation, error_prob), error_prob, GEOMETRY)
    result.write(tmp_path / "out")
    back = read_error_probs(tmp_path / "out", GEOMETRY)
    assert np.abs(back[1] - error_prob[1]).max() <= HALF_STEP
    again = build_report(segmentation, back)
    assert again.case.dice_est == pytest.approx(result.report.case.dice_est, abs=1e-3)


def test_only_nii_gz_names_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="nii.gz"):
        write_probability_map(tmp_path / "error_prob_1.nrrd", probabilities(), GEOMETRY)
    assert not list(tmp_path.iterdir())


def test_sitk_sees_the_file_as_gzip_compressed(written):
    assert written.read_bytes()[:2] == b"\x1f\x8b"
    assert sitk.ReadImage(str(written)).GetPixelID() == sitk.sitkFloat32
