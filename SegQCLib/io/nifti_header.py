"""A NIfTI header whose sform and qform give different voxel grids: say so, and which one SegQC uses.

A NIfTI file holds two position/orientation descriptions: the qform (quaternion, rigid) and the sform
(a general affine), each with a code saying whether it is set.  Tools disagree on which wins when both
are set and differ: SimpleITK, ITK and so 3D Slicer and nnU-Net read the qform, while nibabel and MONAI
take the sform.  SegQC reads images with SimpleITK, so it uses what SimpleITK read (the qform in that
case), the same grid 3D Slicer shows; this module compares it with the sform, from the header fields
SimpleITK exposes as metadata, and returns a notice when they differ.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..geometry import affine_ras_to_lps

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Header values are float32: compare to what float32 keeps, well above its round-off.
SPACING_RELATIVE_TOLERANCE = 1e-3
ORIGIN_TOLERANCE_MM = 1e-2
DIRECTION_TOLERANCE = 1e-3
_SROW_KEYS = ("srow_x", "srow_y", "srow_z")


def is_nifti(path: str) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _sform_lps(image: sitk.Image) -> Optional[np.ndarray]:
    """The sform as a 3x4 LPS affine (voxel index -> mm), or None when the header sets none."""
    keys = set(image.GetMetaDataKeys())
    if "sform_code" not in keys or not all(k in keys for k in _SROW_KEYS):
        return None
    try:
        if int(float(image.GetMetaData("sform_code"))) <= 0:
            return None
        ras = np.array([[float(v) for v in image.GetMetaData(k).split()] for k in _SROW_KEYS])
    except ValueError:
        return None
    if ras.shape != (3, 4) or not np.all(np.isfinite(ras)):
        return None
    return affine_ras_to_lps(ras)


def _describe(spacing: np.ndarray, origin: np.ndarray) -> str:
    return (f"spacing {', '.join(f'{v:.4g}' for v in spacing)} mm, origin "
            f"{', '.join(f'{v:.4g}' for v in origin)} mm")


def sform_qform_notice(image: sitk.Image, path: str, what: str) -> Optional[str]:
    """A notice when the file's sform describes another grid than the one SimpleITK read, else None."""
    if not is_nifti(path) or image.GetDimension() < 3:
        return None
    sform = _sform_lps(image)
    if sform is None:
        return None
    spacing_s = np.linalg.norm(sform[:, :3], axis=0)
    if np.any(spacing_s <= 0):
        return None
    direction_s = sform[:, :3] / spacing_s
    spacing = np.asarray(image.GetSpacing()[:3], dtype=float)
    origin = np.asarray(image.GetOrigin()[:3], dtype=float)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(image.GetDimension(), -1)[:3, :3]
    same = (np.allclose(spacing_s, spacing, rtol=SPACING_RELATIVE_TOLERANCE, atol=0)
            and np.allclose(sform[:, 3], origin, atol=ORIGIN_TOLERANCE_MM)
            and np.allclose(direction_s, direction, atol=DIRECTION_TOLERANCE))
    if same:
        return None
    qform_code = image.GetMetaData("qform_code") if image.HasMetaDataKey("qform_code") else "?"
    sform_code = image.GetMetaData("sform_code")
    orientation = "" if np.allclose(direction_s, direction, atol=DIRECTION_TOLERANCE) else ", another orientation"
    return (f"{what} {path}: its NIfTI header describes two different voxel grids. SegQC uses the qform "
            f"(code {qform_code}: {_describe(spacing, origin)}), as SimpleITK, ITK, 3D Slicer and nnU-Net read it; "
            f"the sform (code {sform_code}: {_describe(spacing_s, sform[:, 3])}{orientation}) is what nibabel and "
            "MONAI use. Measurements (volumes, mm positions) follow the qform; if the sform is the right one, "
            "fix the header (e.g. set the qform from the sform) and run again.")
