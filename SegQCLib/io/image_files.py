"""Image files (NIfTI, NRRD, MHA; Slicer ``.seg.nrrd`` for label maps) <-> :class:`Volume` / :class:`LabelMap`.

Everything returned here is a (z, y, x) numpy array plus a :class:`Geometry`.  Writes are atomic
(:func:`SegQCLib.files.atomic_write`: temporary file in the same folder, then ``os.replace``) so a
killed process never leaves a half file under the final name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..files import TEMP_SUFFIX, atomic_write
from ..geometry import Geometry
from .nifti_header import sform_qform_notice
from .seg_nrrd import SEG_NRRD_SUFFIX, read_seg_nrrd, write_seg_nrrd
from .volumes import LabelMap, Volume, validate_label_array

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", SEG_NRRD_SUFFIX)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _check_readable(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} path is a folder, expected a file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{what} file is empty (0 bytes): {path}")
    return path


def _read_sitk(path: Path, what: str) -> sitk.Image:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InputError(f"Cannot read {what} {path}: not a readable NIfTI/NRRD/MHA image ({first_line})") from exc
    dimension = image.GetDimension()
    if dimension == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
        dimension = 3
    if dimension != 3:
        raise InputError(f"{what} {path} is {dimension}D with size {image.GetSize()}; SegQC needs a 3D volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{what} {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "SegQC needs a scalar volume (give each modality as its own file)"
        )
    if min(image.GetSize()) < 1:
        raise InputError(f"{what} {path} has no voxels (size {image.GetSize()})")
    return image


def read_image(path: PathLike) -> Volume:
    """Read a scalar 3D image as float32."""
    path = _check_readable(path, "Image")
    image = _read_sitk(path, "image")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise InputError(f"Image {path} contains NaN or infinite values")
    return Volume(array, Geometry.from_sitk(image), str(path), _notices(image, path, "Image"))


def read_labelmap(path: PathLike) -> LabelMap:
    """Read a label map from NIfTI/NRRD/MHA, or a Slicer ``.seg.nrrd`` (segment names kept)."""
    path = _check_readable(path, "Segmentation")
    if path.name.lower().endswith(SEG_NRRD_SUFFIX):
        return read_seg_nrrd(path)
    image = _read_sitk(path, "segmentation")
    array = validate_label_array(sitk.GetArrayFromImage(image), str(path))
    return LabelMap(array, Geometry.from_sitk(image), {}, str(path), _notices(image, path, "Segmentation"))


def _notices(image: sitk.Image, path: Path, what: str) -> list[str]:
    notice = sform_qform_notice(image, str(path), what)
    if notice:
        logger.warning(notice)
    return [notice] if notice else []


def write_array(path: PathLike, array: np.ndarray, geometry: Geometry, compress: bool = True) -> Path:
    """Write a (z, y, x) array with ``geometry`` atomically; the format follows the file name."""
    path = Path(path)
    if tuple(array.shape) != tuple(geometry.shape_zyx):
        raise ValueError(f"Array shape {array.shape} does not match geometry {geometry.shape_zyx}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    geometry.apply_to(image)
    return atomic_write(path, lambda temporary: sitk.WriteImage(image, str(temporary), compress),
                        suffix=f"{TEMP_SUFFIX}{_suffix(path)}")


def write_labelmap(path: PathLike, labelmap: LabelMap) -> Path:
    """Write a label map; ``.seg.nrrd`` keeps segment names so Slicer shows them."""
    path = Path(path)
    if path.name.lower().endswith(SEG_NRRD_SUFFIX):
        return write_seg_nrrd(path, labelmap)
    return write_array(path, labelmap.array, labelmap.geometry)
