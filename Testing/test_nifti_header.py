"""A NIfTI file whose sform and qform disagree is read as SimpleITK reads it (the qform), with a notice that says so
and reaches report.json and the corrections record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SegQCLib.commands.cli import main as segqc_main
from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.io.case import load_case
from SegQCLib.io.image_files import read_image, read_labelmap, write_array

nib = pytest.importorskip("nibabel", reason="nibabel (from the test extra) crafts the NIfTI headers")

SHAPE_XYZ = (8, 7, 6)


def crafted(path, data_xyz: np.ndarray, qform_mm: float, sform_mm: float, sform_code: int = 1):
    """A NIfTI file with isotropic qform spacing ``qform_mm`` and sform spacing ``sform_mm``."""
    image = nib.Nifti1Image(data_xyz, None)
    image.set_qform(np.diag([qform_mm, qform_mm, qform_mm, 1.0]), code=1)
    image.set_sform(np.diag([sform_mm, sform_mm, sform_mm, 1.0]), code=sform_code)
    nib.save(image, str(path))
    return path


def label_data() -> np.ndarray:
    data = np.zeros(SHAPE_XYZ, np.uint8)
    data[2:6, 2:5, 1:4] = 1
    return data


def test_disagreeing_sform_and_qform_are_read_as_the_qform_with_a_notice(tmp_path):
    path = crafted(tmp_path / "img.nii.gz", np.ones(SHAPE_XYZ, np.float32), qform_mm=1.0, sform_mm=2.0)
    volume = read_image(path)
    assert volume.geometry.spacing_xyz_mm == pytest.approx((1.0, 1.0, 1.0))
    assert nib.load(str(path)).header.get_zooms() and np.allclose(np.diag(nib.load(str(path)).affine)[:3], 2.0)
    [notice] = volume.notices
    assert "SegQC uses the qform" in notice and "spacing 1, 1, 1 mm" in notice
    assert "sform" in notice and "spacing 2, 2, 2 mm" in notice and "nibabel and MONAI" in notice


@pytest.mark.parametrize("sform_mm, sform_code", [(1.0, 1), (2.0, 0)])
def test_an_agreeing_or_unset_sform_gives_no_notice(tmp_path, sform_mm, sform_code):
    path = crafted(tmp_path / "img.nii.gz", np.ones(SHAPE_XYZ, np.float32), 1.0, sform_mm, sform_code)
    assert read_image(path).notices == []


def test_files_segqc_writes_have_consistent_headers(tmp_path):
    volume = read_image(crafted(tmp_path / "in.nii.gz", np.ones(SHAPE_XYZ, np.float32), 1.0, 2.0))
    write_array(tmp_path / "out.nii.gz", volume.array, volume.geometry)
    assert read_image(tmp_path / "out.nii.gz").notices == []


def test_the_notice_reaches_the_case_and_report_json(tmp_path):
    image = crafted(tmp_path / "img.nii.gz", np.ones(SHAPE_XYZ, np.float32), 1.0, 2.0)
    seg = crafted(tmp_path / "seg.nii.gz", label_data(), 1.0, 2.0)
    case = load_case([image], seg)
    assert len(case.notices) == 2 and all("SegQC uses the qform" in n for n in case.notices)
    labelmap = read_labelmap(seg)
    write_array(tmp_path / "maps" / "error_prob_1.nii.gz", np.full(labelmap.array.shape, 0.1, np.float32),
                labelmap.geometry)
    assert segqc_main(["estimate", "--seg", str(seg), "--error-prob", str(tmp_path / "maps"),
                       "--out", str(tmp_path / "qc")]) == 0
    notices = json.loads((tmp_path / "qc" / "report.json").read_text())["notices"]
    assert any("Segmentation" in n and "SegQC uses the qform" in n for n in notices)


def test_the_notice_is_kept_in_the_corrections_record(tmp_path):
    image = crafted(tmp_path / "img.nii.gz", np.ones(SHAPE_XYZ, np.float32), 1.0, 2.0)
    original = crafted(tmp_path / "original.nii.gz", np.zeros(SHAPE_XYZ, np.uint8), 1.0, 1.0)
    corrected = crafted(tmp_path / "corrected.nii.gz", label_data(), 1.0, 1.0)
    record = CorrectionStore(tmp_path / "store").add("c", [image], original, corrected)
    [notice] = record.metadata.notices
    assert "img.nii.gz" in notice and "SegQC uses the qform" in notice
    stored = json.loads((record.path / "record.json").read_text())
    assert stored["notices"] == [notice]
