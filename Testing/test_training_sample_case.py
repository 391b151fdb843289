"""The README's sample case: an MNI152 hippocampus crop (from nilearn's files) segmented by a segmenter."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import SimpleITK as sitk

from SegQCLib.io.image_files import read_image, read_labelmap
from training.sample_case import CROP_SIZE_XYZ, LEFT_HIPPOCAMPUS_CENTRE_RAS_MM, crop_around, make_sample_case
from training.segmenter import SegmenterConfig, UNet3D, save_segmenter

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nilearn") is None,
                                reason="nilearn (the MNI152 template) is not installed: pip install nilearn")


def test_crop_is_centred_on_the_requested_point_with_the_msd_crop_size():
    image = sitk.Image(100, 120, 90, sitk.sitkFloat32)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    image.SetOrigin((50.0, 60.0, -45.0))
    crop = crop_around(image, LEFT_HIPPOCAMPUS_CENTRE_RAS_MM, CROP_SIZE_XYZ)
    assert crop.GetSize() == CROP_SIZE_XYZ
    centre_index = [(s - 1) / 2 for s in crop.GetSize()]
    centre_lps = crop.TransformContinuousIndexToPhysicalPoint(centre_index)
    expected_lps = (-LEFT_HIPPOCAMPUS_CENTRE_RAS_MM[0], -LEFT_HIPPOCAMPUS_CENTRE_RAS_MM[1],
                    LEFT_HIPPOCAMPUS_CENTRE_RAS_MM[2])
    np.testing.assert_allclose(centre_lps, expected_lps, atol=1.0)


def test_sample_case_files_share_one_grid_and_hold_a_label_map(tmp_path):
    save_segmenter(UNet3D(SegmenterConfig(base_channels=4, levels=2)), tmp_path / "segmenter")
    image_path, seg_path = make_sample_case(tmp_path / "sample", tmp_path / "segmenter")
    image = read_image(image_path)
    seg = read_labelmap(seg_path)
    assert image.array.shape == seg.array.shape == tuple(reversed(CROP_SIZE_XYZ))
    assert image.geometry == seg.geometry
    assert set(np.unique(seg.array)) <= {0, 1, 2}
    assert image.array.std() > 0  # real template intensities, not an empty crop
