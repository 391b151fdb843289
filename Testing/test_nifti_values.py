"""NaN and infinity stored in NIfTI voxels are counted from the file itself (ITK reads them as 0)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SegQCLib.errors import InputError
from SegQCLib.io.image_files import read_image
from SegQCLib.io.nifti_values import count_nonfinite

nib = pytest.importorskip("nibabel", reason="nibabel (from the test extra) writes NIfTI-2 and integer files")


def test_simpleitk_reads_nan_voxels_of_a_nifti_as_zero_which_is_why_they_are_counted(tmp_path):
    values = np.full((3, 4, 5), np.nan, np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "nan.nii.gz"))
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "nan.nii.gz")))).all()  # what ITK sees
    with pytest.raises(InputError, match="NaN"):  # what SegQC says
        read_image(tmp_path / "nan.nii.gz")
    assert count_nonfinite(tmp_path / "nan.nii.gz") == values.size


def test_infinities_in_an_uncompressed_nifti2_are_counted(tmp_path):
    values = np.zeros((3, 4, 5), np.float64)
    values[0, 0, :2] = [np.inf, -np.inf]
    nib.save(nib.Nifti2Image(values, np.eye(4)), str(tmp_path / "inf.nii"))
    assert count_nonfinite(tmp_path / "inf.nii") == 2


def test_finite_and_integer_data_have_none(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5), np.float32), np.eye(4)), str(tmp_path / "ones.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5), np.uint8), np.eye(4)), str(tmp_path / "labels.nii.gz"))
    assert count_nonfinite(tmp_path / "ones.nii.gz") == 0 and count_nonfinite(tmp_path / "labels.nii.gz") == 0
