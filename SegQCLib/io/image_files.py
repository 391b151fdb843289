"""Image files (NIfTI, NRRD, MHA; Slicer ``.seg.nrrd`` for label maps) <-> :class:`Volume` / :class:`LabelMap`.

Everything returned here is a (z, y, x) numpy array plus a :class:`Geometry`.  Reading checks the same
things for every format before and after SimpleITK reads: the path is a regular file; the header's
size, voxel type and data fit the file and the memory left (:mod:`.image_headers`); no axis has size 0;
the values are finite (NIfTI data are scanned by :mod:`.nifti_data`, since SimpleITK reads NaN there
as 0); the direction matrix is orthonormal (:mod:`.directions`).  Writes are atomic and verified
(:func:`SegQCLib.files.atomic_write` with :func:`.written.image_file_verifier`: temporary file in the
same folder, read back, then ``os.replace``), so neither a killed process nor a full disk ever leaves
a half file under the final name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..files import TEMP_SUFFIX, NotARegularFileError, atomic_write, open_regular_file
from ..geometry import Geometry
from .directions import checked_direction, explain_itk_geometry_error
from .image_headers import check_header
from .nifti_data import scan_nifti_data
from .nifti_header import sform_qform_notice
from .probability_maps import quantize_probabilities, write_probability_nifti
from .seg_nrrd import SEG_NRRD_SUFFIX, read_seg_nrrd, write_seg_nrrd
from .volumes import LabelMap, Volume, nonfinite_message, validate_label_array
from .written import image_file_verifier

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", SEG_NRRD_SUFFIX)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


# Bytes per voxel that readers add to the file's own voxels: SimpleITK's buffer is copied into numpy, and an
# image is then converted to float32 (a label map to a compact integer type).
IMAGE_COPY_BYTES_PER_VOXEL = 4
LABEL_COPY_BYTES_PER_VOXEL = 2


def _check_readable(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} path is a folder, expected a file: {path}")
    try:
        with open_regular_file(path) as handle:  # a FIFO or a device would hang or flood the reader
            size = os.fstat(handle.fileno()).st_size
    except NotARegularFileError as exc:
        raise InputError(f"{what} {path} is {exc.kind}, not an image file") from exc
    except OSError as exc:
        raise InputError(f"Cannot read {what.lower()} {path}: {os.strerror(exc.errno) if exc.errno else exc}") from exc
    if size == 0:
        raise InputError(f"{what} file is empty (0 bytes): {path}")
    return path


def _check_nifti_values(path: Path, what: str, extra_bytes_per_voxel: int) -> None:
    """Header against file and memory (every format); for NIfTI also the whole data (gzip CRC, finite values)."""
    header = check_header(path, what, extra_bytes_per_voxel)
    if header is None or header.format != "NIfTI" or not (header.float_type or header.compression.value != "none"):
        return
    scan = scan_nifti_data(header)
    if scan.nonfinite:
        raise InputError(nonfinite_message(what, str(path), scan.nonfinite))


def _read_sitk(path: Path, what: str, extra_bytes_per_voxel: int = IMAGE_COPY_BYTES_PER_VOXEL) -> sitk.Image:
    _check_nifti_values(path, what.capitalize(), extra_bytes_per_voxel)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        explained = explain_itk_geometry_error(str(exc), str(path), what.capitalize())
        if explained:
            raise InputError(explained) from exc
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
        raise InputError(f"{what.capitalize()} {path} has a size of {'×'.join(map(str, image.GetSize()))} voxels: "
                         "an axis of size 0 holds no voxels")
    return image


def _geometry(image: sitk.Image, path: Path, what: str) -> tuple[Geometry, list[str]]:
    """The image's grid with its direction checked (:mod:`.directions`), and the notices reading found."""
    direction, direction_notice = checked_direction(image.GetDirection(), str(path), what)
    geometry = Geometry.from_sitk(image)
    notices = _notices(image, path, what)
    if direction_notice:
        logger.warning(direction_notice)
        geometry = Geometry(geometry.shape_zyx, geometry.spacing_xyz_mm, geometry.origin_lps_mm, direction)
        notices.append(direction_notice)
    return geometry, notices


def read_image(path: PathLike) -> Volume:
    """Read a scalar 3D image as float32."""
    path = _check_readable(path, "Image")
    image = _read_sitk(path, "image")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    nonfinite = int(array.size - np.count_nonzero(np.isfinite(array)))
    if nonfinite:
        raise InputError(nonfinite_message("Image", str(path), nonfinite))
    geometry, notices = _geometry(image, path, "Image")
    return Volume(array, geometry, str(path), notices)


def read_labelmap(path: PathLike) -> LabelMap:
    """Read a label map from NIfTI/NRRD/MHA, or a Slicer ``.seg.nrrd`` (segment names kept)."""
    path = _check_readable(path, "Segmentation")
    if path.name.lower().endswith(SEG_NRRD_SUFFIX):
        check_header(path, "Segmentation", LABEL_COPY_BYTES_PER_VOXEL)
        return read_seg_nrrd(path)
    image = _read_sitk(path, "segmentation", LABEL_COPY_BYTES_PER_VOXEL)
    array = validate_label_array(sitk.GetArrayFromImage(image), str(path))
    geometry, notices = _geometry(image, path, "Segmentation")
    return LabelMap(array, geometry, {}, str(path), notices)


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
    array = np.ascontiguousarray(array)
    image = sitk.GetImageFromArray(array)
    geometry.apply_to(image)
    return atomic_write(path, lambda temporary: sitk.WriteImage(image, str(temporary), compress),
                        suffix=f"{TEMP_SUFFIX}{_suffix(path)}", verify=image_file_verifier(array, geometry))


def write_probability_map(path: PathLike, prob: np.ndarray, geometry: Geometry) -> Path:
    """Write probabilities in [0, 1] atomically as a ``.nii.gz`` of 8-bit codes scaled by 1/255 in the header
    (:mod:`.probability_maps`): read back as float32 by SimpleITK, nibabel and Slicer, within 1/510."""
    path = Path(path)
    if not path.name.lower().endswith(".nii.gz"):
        raise ValueError(f"Probability maps are written as .nii.gz, not {path.name}")
    if tuple(prob.shape) != tuple(geometry.shape_zyx):
        raise ValueError(f"Array shape {prob.shape} does not match geometry {geometry.shape_zyx}")
    # Read back like every image SegQC writes: the stored voxels are the 8-bit codes.
    codes = quantize_probabilities(prob)  # once: written, then compared with what reads back
    return atomic_write(path, lambda temporary: write_probability_nifti(temporary, codes, geometry),
                        suffix=f"{TEMP_SUFFIX}.nii.gz",
                        verify=image_file_verifier(codes, geometry))


def write_labelmap(path: PathLike, labelmap: LabelMap) -> Path:
    """Write a label map; ``.seg.nrrd`` keeps segment names so Slicer shows them."""
    path = Path(path)
    if path.name.lower().endswith(SEG_NRRD_SUFFIX):
        return write_seg_nrrd(path, labelmap)
    return write_array(path, labelmap.array, labelmap.geometry)
